//! Program loading that survives a signal arriving during verification.

/// How often a `BPF_PROG_LOAD` that returned `EAGAIN` is tried again (libbpf's count).
const LOAD_ATTEMPTS: usize = 5;

/// Runs a program load, again when the kernel answered `EAGAIN`: the verifier gives up with
/// `EAGAIN` when a signal is pending for the loading thread (a `SIGCHLD` from a child process,
/// tokio's signal handler), which says nothing about the program. libbpf retries the same way.
/// A failed load leaves aya's program unloaded, so calling it again is a fresh load.
pub(crate) fn load_retrying(
    mut load: impl FnMut() -> Result<(), aya::programs::ProgramError>,
) -> Result<(), aya::programs::ProgramError> {
    let mut attempt = 1;
    loop {
        match load() {
            Err(aya::programs::ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && attempt < LOAD_ATTEMPTS =>
            {
                attempt += 1;
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aya::programs::ProgramError;
    use aya_obj::VerifierLog;

    fn refused(errno: i32) -> ProgramError {
        ProgramError::LoadError {
            io_error: std::io::Error::from_raw_os_error(errno),
            verifier_log: VerifierLog::new(String::new()),
        }
    }

    #[test]
    fn eagain_is_tried_again_and_a_later_success_wins() {
        let mut calls = 0;
        let r = load_retrying(|| {
            calls += 1;
            if calls < 3 {
                Err(refused(libc::EAGAIN))
            } else {
                Ok(())
            }
        });
        assert!(r.is_ok());
        assert_eq!(calls, 3);
    }

    #[test]
    fn eagain_gives_up_after_libbpfs_attempt_count() {
        let mut calls = 0;
        let r = load_retrying(|| {
            calls += 1;
            Err(refused(libc::EAGAIN))
        });
        assert!(matches!(r, Err(ProgramError::LoadError { .. })));
        assert_eq!(calls, LOAD_ATTEMPTS);
    }

    #[test]
    fn a_verifier_refusal_is_not_retried() {
        let mut calls = 0;
        let r = load_retrying(|| {
            calls += 1;
            Err(refused(libc::EACCES))
        });
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }
}
