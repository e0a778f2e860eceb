//! A TCP relay to the test broker: an outage, a slow link, or the broker's address on a link
//! to another network namespace, for one test without touching the broker every other test
//! uses.

use std::time::Duration;

/// A TCP relay to the test broker that can be taken down and brought back: a broker outage for
/// one test, without stopping the broker every other test uses.
pub struct Relay {
    ip: String,
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Relay {
    pub fn new(up: bool) -> Relay {
        Relay::at("127.0.0.1", up)
    }

    /// A relay listening on `ip` (an address of this host, such as the host's end of a link to
    /// a network namespace).
    pub fn at(ip: &str, up: bool) -> Relay {
        Relay::delayed(ip, up, Duration::ZERO)
    }

    /// A relay on `ip` that holds every byte `delay` before passing it on, each way: a link
    /// with that much latency added.
    pub fn delayed(ip: &str, up: bool, delay: Duration) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let relay = Relay {
            ip: ip.to_owned(),
            port,
            up: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(up)),
            open: Default::default(),
        };
        let (up, open) = (relay.up.clone(), relay.open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                // Down: the connection is dropped at once, as by a broker that is not there.
                if !up.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(broker) = std::net::TcpStream::connect("127.0.0.1:5672") else {
                    continue;
                };
                let mut open = open.lock().unwrap();
                for (from, to) in [(&client, &broker), (&broker, &client)] {
                    let (from, to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    std::thread::spawn(move || pump(from, to, delay));
                }
                open.push(client);
                open.push(broker);
            }
        });
        relay
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@{}:{}/%2f", self.ip, self.port)
    }

    /// Cut every connection and refuse new ones.
    pub fn down(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn up(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Pass what `from` sends on to `to`, each piece `delay` after it came, until either ends.
fn pump(mut from: std::net::TcpStream, mut to: std::net::TcpStream, delay: Duration) {
    use std::io::{Read, Write};
    if delay.is_zero() {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Both);
        return;
    }
    let (send, due) = std::sync::mpsc::channel::<(std::time::Instant, Vec<u8>)>();
    let mut writer = to.try_clone().unwrap();
    std::thread::spawn(move || {
        for (when, piece) in due {
            std::thread::sleep(when.saturating_duration_since(std::time::Instant::now()));
            if writer.write_all(&piece).is_err() {
                break;
            }
        }
        let _ = writer.shutdown(std::net::Shutdown::Both);
    });
    let mut buf = vec![0; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        if send
            .send((std::time::Instant::now() + delay, buf[..n].to_vec()))
            .is_err()
        {
            break;
        }
    }
}
