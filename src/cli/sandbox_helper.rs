//! `shipyard __sandbox`: the helper process of a sandboxed step (see
//! `crate::sandbox`). Not for direct use.

use crate::sandbox::{helper::helper_main, job::StepSpec, SPEC_ENV};

pub fn run() -> ! {
    let code = match std::env::var(SPEC_ENV)
        .ok()
        .and_then(|s| serde_json::from_str::<StepSpec>(&s).ok())
    {
        Some(spec) => helper_main(&spec),
        None => {
            eprintln!("shipyard __sandbox: no valid {SPEC_ENV}; this command is internal");
            crate::sandbox::helper::SETUP_FAILED
        }
    };
    std::process::exit(code)
}
