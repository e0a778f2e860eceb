//! A bounded tail of a process's stderr: the last lines are what explains a failure, and a
//! chatty ffmpeg must not grow memory without bound.

use std::collections::VecDeque;

#[derive(Debug)]
pub struct Tail {
    lines: VecDeque<String>,
    max_lines: usize,
    /// Every line pushed, kept or not.
    pushed: u64,
}

impl Tail {
    pub fn new(max_lines: usize) -> Self {
        Self {
            lines: VecDeque::with_capacity(max_lines),
            max_lines,
            pushed: 0,
        }
    }

    pub fn push(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line).trim_end().to_owned();
        if text.is_empty() {
            return;
        }
        self.pushed += 1;
        if self.lines.len() == self.max_lines {
            self.lines.pop_front();
        }
        // A single enormous line must not defeat the bound either.
        self.lines.push_back(text.chars().take(400).collect());
    }

    pub fn text(&self) -> String {
        self.lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(String::as_str)
    }

    /// How many lines were pushed in all (the tail keeps only the last of them).
    pub fn count(&self) -> u64 {
        self.pushed
    }

    /// The last non-empty line: the one that usually says what went wrong.
    pub fn last_line(&self) -> Option<&str> {
        self.lines.back().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_last_lines() {
        let mut tail = Tail::new(2);
        for line in ["one", "", "two", "three"] {
            tail.push(line.as_bytes());
        }
        assert_eq!(tail.text(), "two\nthree");
        assert_eq!(tail.last_line(), Some("three"));
        assert_eq!(tail.count(), 3);
    }
}
