//! Serde for paths whose names may not be UTF-8 (old camcorder archives copied from other
//! systems have such names). A UTF-8 path is a plain JSON string; any other path is
//! `{"unix_bytes": [..]}`, so it survives a round trip through JSON (and over a broker) exactly.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Repr {
    Text(String),
    Bytes { unix_bytes: Vec<u8> },
}

pub fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    match path.to_str() {
        Some(text) => Repr::Text(text.to_owned()),
        None => Repr::Bytes {
            unix_bytes: path.as_os_str().as_bytes().to_vec(),
        },
    }
    .serialize(s)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    Ok(match Repr::deserialize(d)? {
        Repr::Text(text) => PathBuf::from(text),
        Repr::Bytes { unix_bytes } => PathBuf::from(OsString::from_vec(unix_bytes)),
    })
}

/// The raw bytes of a path, as stored in SQLite.
pub fn to_bytes(path: &Path) -> Vec<u8> {
    path.as_os_str().as_bytes().to_vec()
}

/// The inverse of [`to_bytes`].
pub fn from_bytes(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(OsString::from_vec(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Holder {
        #[serde(with = "super")]
        p: PathBuf,
    }

    #[test]
    fn utf8_path_is_a_plain_string() {
        let h = Holder {
            p: PathBuf::from("/tapes/a \"b\".mpg"),
        };
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, r#"{"p":"/tapes/a \"b\".mpg"}"#);
        assert_eq!(serde_json::from_str::<Holder>(&json).unwrap(), h);
    }

    #[test]
    fn non_utf8_path_round_trips_exactly() {
        let h = Holder {
            p: from_bytes(b"/tapes/\xff\xfe.mpg".to_vec()),
        };
        let json = serde_json::to_string(&h).unwrap();
        assert!(json.contains("unix_bytes"), "{json}");
        assert_eq!(serde_json::from_str::<Holder>(&json).unwrap(), h);
    }
}
