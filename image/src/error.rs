//! Errors as text. Every error of this crate says its own step and
//! returns its cause as `source()`; this is the whole chain as one line,
//! for the few places that must flatten an error to text. A leaf: every
//! module may use it, and it uses none.

/// `e` and each of its causes, joined by ": ". The errors of this crate
/// print their own step only and return the cause as `source()` (so a
/// program walking the chain says each cause once); code that must
/// flatten an error to one line (a log line for a failure it recovers
/// from, a message crossing a process boundary) uses this, since
/// `e.to_string()` alone would drop the why.
pub fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        // A cause already said (an error that also printed its source, or
        // a transparent wrapper) or with nothing to say is left out.
        let s = c.to_string();
        if !s.is_empty() && !out.contains(&s) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&s);
        }
        cause = c.source();
    }
    out
}
