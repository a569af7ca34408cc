//! Fuzz target `authenticated_payload`: see [`mmaudit_fuzz::targets::authenticated_payload`].
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mmaudit_fuzz::targets::authenticated_payload(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    mmaudit_fuzz::driver::main(
        "authenticated_payload",
        mmaudit_fuzz::targets::authenticated_payload,
    )
}
