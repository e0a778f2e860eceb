//! `videofarm profiles`: what each profile does.

use crate::error::ExitStatus;
use crate::settings::Settings;

pub fn profiles(settings: &Settings) -> ExitStatus {
    for profile in settings.profiles.iter() {
        let default = if profile.name == settings.default_profile {
            " (default)"
        } else {
            ""
        };
        println!(
            "{}{default}  .{}  {}",
            profile.name, profile.extension, profile.description
        );
        println!("    ffmpeg -i INPUT {} OUTPUT", profile.args.join(" "));
    }
    ExitStatus::Success
}
