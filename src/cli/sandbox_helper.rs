//! `shipyard __sandbox`: the helper process of a sandboxed step (see
//! `crate::sandbox`). Not for direct use.

use crate::build::capture::CaptureJob;
use crate::build::copy::CopyJob;
use crate::build::owners::OwnersJob;
use crate::build::restore::RestoreJob;
use crate::build::users::LookupJob;
use crate::sandbox::job::{NsJob, StepSpec};
use crate::sandbox::{helper::helper_main, SPEC_ENV};
use crate::tapeout::job::TapeoutJob;

/// The in-namespace work this binary knows; the sandbox only carries it.
fn dispatch(job: &NsJob) -> Result<(), String> {
    job.run_as::<TapeoutJob>()
        .or_else(|| job.run_as::<CaptureJob>())
        .or_else(|| job.run_as::<RestoreJob>())
        .or_else(|| job.run_as::<CopyJob>())
        .or_else(|| job.run_as::<LookupJob>())
        .or_else(|| job.run_as::<OwnersJob>())
        .unwrap_or_else(|| Err(format!("unknown in-namespace job {:?}", job.kind)))
}

pub fn run() -> ! {
    let code = match std::env::var(SPEC_ENV)
        .ok()
        .and_then(|s| serde_json::from_str::<StepSpec>(&s).ok())
    {
        Some(spec) => helper_main(&spec, &dispatch),
        None => {
            eprintln!("shipyard __sandbox: no valid {SPEC_ENV}; this command is internal");
            crate::sandbox::helper::SETUP_FAILED
        }
    };
    std::process::exit(code)
}
