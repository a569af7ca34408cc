//! Fuzz target `commit_audit`: see [`mmaudit_fuzz::targets::commit_audit`].
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mmaudit_fuzz::targets::commit_audit(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    mmaudit_fuzz::driver::main("commit_audit", mmaudit_fuzz::targets::commit_audit)
}
