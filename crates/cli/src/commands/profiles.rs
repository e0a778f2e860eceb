//! `videofarm profiles`: what each profile does.

use crate::error::ExitStatus;
use crate::settings::Settings;
use std::io::Write;

pub fn profiles(settings: &Settings) -> ExitStatus {
    let mut out = std::io::stdout();
    for profile in settings.profiles.iter() {
        let default = if profile.name == settings.default_profile {
            " (default)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{}{default}  .{}  {}",
            profile.name, profile.extension, profile.description
        );
        let _ = writeln!(out, "    ffmpeg -i INPUT {} OUTPUT", profile.args.join(" "));
    }
    ExitStatus::Success
}
