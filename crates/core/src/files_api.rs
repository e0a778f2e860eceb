//! The file server's protocol (`/api/files/...`): what `serve` answers and what a worker that
//! cannot see the media reads, one set of types for both sides, so that neither reads a field
//! the other does not write. Errors are [`ErrorBody`] with the HTTP status saying what kind.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `GET /api/files/{job}/input/blake3`: what there is to fetch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum InputAnswer {
    /// The output is in place already, so there is nothing to fetch: `""` when it is this
    /// job's verified encode, otherwise why it is not.
    OutputThere { output: String },
    /// The input's BLAKE3 hash (hex) and size; `planned` when the job is a split tape that a
    /// worker that sees the media has planned already (it then waits for its chunks).
    Input {
        blake3: String,
        size: u64,
        #[serde(default)]
        planned: bool,
    },
}

/// `GET /api/files/{job}/output?attempt=A`, and the answer to each part sent: how many bytes
/// of the attempt's upload are staged (the next part starts there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    pub size: u64,
}

/// What a chunk tells its tape through the server (`PUT /api/files/{job}/mark`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MarkKind {
    /// Why the chunk failed for good.
    Failed,
    /// The damage the chunk's encode saw in its part of the input.
    Warnings,
    /// The signal it measured there, for its tape's report (a `report::Signal` in JSON).
    Signal,
}

impl MarkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MarkKind::Failed => "failed",
            MarkKind::Warnings => "warnings",
            MarkKind::Signal => "signal",
        }
    }
}

/// The query of `PUT /api/files/{job}/mark?attempt=A&kind=K`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct MarkQuery {
    pub attempt: u32,
    pub kind: MarkKind,
}

/// The answer to a mark: the name it was written under in the tape's work folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marked {
    pub marked: String,
}

/// `POST /api/files/{job}/output/commit?attempt=A&blake3=H`: the upload verified and
/// published (or found published already).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Committed {
    #[serde(with = "crate::pathser")]
    pub published: PathBuf,
    /// An earlier attempt had published this job's verified encode; it was left in place.
    #[serde(default)]
    pub already: bool,
    /// What the server found in the file it published: the job's record describes this file,
    /// not the worker's copy of it. Absent from a server of an earlier version (a farm being
    /// upgraded): the worker's own measures stand.
    #[serde(default)]
    pub file: Option<PublishedFile>,
}

/// A published file as the server measured it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PublishedFile {
    pub size: u64,
    pub duration_s: f64,
    pub frames: u64,
}

/// Every refusal's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_answer_reads_back_as_written_on_either_side() {
        for answer in [
            InputAnswer::OutputThere { output: "".into() },
            InputAnswer::Input {
                blake3: "ab".repeat(32),
                size: 7,
                planned: true,
            },
        ] {
            let text = serde_json::to_string(&answer).unwrap();
            assert_eq!(serde_json::from_str::<InputAnswer>(&text).unwrap(), answer);
        }
        assert!(serde_json::from_str::<InputAnswer>(r#"{"size": 3}"#).is_err());
        let kind: MarkQuery = serde_json::from_str(r#"{"attempt":1,"kind":"warnings"}"#).unwrap();
        assert_eq!(kind.kind, MarkKind::Warnings);
        assert!(serde_json::from_str::<MarkQuery>(r#"{"attempt":1,"kind":"x"}"#).is_err());
    }
}
