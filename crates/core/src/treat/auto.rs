//! Which choices a profile lets the treatment make (`auto` in a profile).

use serde::{Deserialize, Serialize};

/// What a profile's treatment may choose: `auto = true` in a profile, everything; a list
/// (`auto = ["fields", "trim"]`), only the choices it names; `false` (the default), nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Auto {
    /// The deinterlacer's field order (or none for a progressive tape).
    pub fields: bool,
    /// Head-switching rows masked black.
    pub mask: bool,
    /// Loudness normalised.
    pub loudness: bool,
    /// Blank tape cut at the ends.
    pub trim: bool,
}

impl Auto {
    pub const ALL: Auto = Auto {
        fields: true,
        mask: true,
        loudness: true,
        trim: true,
    };
    pub const OFF: Auto = Auto {
        fields: false,
        mask: false,
        loudness: false,
        trim: false,
    };
    /// The choices' names in a profile's list.
    pub const NAMES: [&'static str; 4] = ["fields", "mask", "loudness", "trim"];

    pub fn any(&self) -> bool {
        *self != Auto::OFF
    }

    pub fn is_off(&self) -> bool {
        !self.any()
    }

    fn flags(&self) -> [bool; 4] {
        [self.fields, self.mask, self.loudness, self.trim]
    }
}

impl Serialize for Auto {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Auto::ALL => s.serialize_bool(true),
            Auto::OFF => s.serialize_bool(false),
            _ => s.collect_seq(
                Auto::NAMES
                    .iter()
                    .zip(self.flags())
                    .filter(|(_, on)| *on)
                    .map(|(name, _)| name),
            ),
        }
    }
}

impl<'de> Deserialize<'de> for Auto {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            All(bool),
            Some(Vec<String>),
        }
        match Raw::deserialize(d)? {
            Raw::All(true) => Ok(Auto::ALL),
            Raw::All(false) => Ok(Auto::OFF),
            Raw::Some(names) => {
                let mut auto = Auto::OFF;
                for name in names {
                    let slot = match name.as_str() {
                        "fields" => &mut auto.fields,
                        "mask" => &mut auto.mask,
                        "loudness" => &mut auto.loudness,
                        "trim" => &mut auto.trim,
                        other => {
                            return Err(serde::de::Error::custom(format!(
                                "auto: {other:?} is not a treatment (true, false, or a list of {})",
                                Auto::NAMES.join(", ")
                            )))
                        }
                    };
                    *slot = true;
                }
                Ok(auto)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Fields;
    use crate::treat::{FieldOrder, Treatment};

    #[test]
    fn a_profile_turns_the_treatment_on_whole_or_choice_by_choice() {
        #[derive(Deserialize, Serialize)]
        struct P {
            #[serde(default)]
            auto: Auto,
        }
        let read = |text: &str| serde_json::from_str::<P>(text).map(|p| p.auto);
        assert_eq!(read(r#"{"auto": true}"#).unwrap(), Auto::ALL);
        assert_eq!(read("{}").unwrap(), Auto::OFF);
        let some = read(r#"{"auto": ["fields", "trim"]}"#).unwrap();
        assert!(some.fields && some.trim && !some.mask && !some.loudness);
        let err = read(r#"{"auto": ["deinterlace"]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"deinterlace\" is not a treatment"), "{err}");
        assert_eq!(
            serde_json::to_string(&P { auto: some }).unwrap(),
            r#"{"auto":["fields","trim"]}"#
        );
        // What is not allowed is not chosen, whatever the survey found.
        let fields = Fields {
            top: 0,
            bottom: 200,
            progressive: 0,
        };
        let t = Treatment::choose_as(some, &fields, 8, None, None).unwrap();
        assert_eq!(
            (t.fields, t.mask_bottom),
            (Some(FieldOrder::BottomFirst), 0)
        );
        assert_eq!(
            Treatment::choose_as(Auto::OFF, &fields, 8, None, None),
            None
        );
    }
}
