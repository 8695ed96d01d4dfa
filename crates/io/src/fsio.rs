//! File-system errors as a user should read them.

use std::io;

/// A `tempfile` error without the temporary file's name: tempfile wraps
/// the OS error in one whose message appends `at path "DIR/.tmpXXXXXX"`,
/// a name the user never chose and that no longer exists. The wrapper
/// hides the OS error itself, so its message is cut at that suffix (the
/// kind is kept). Any other error is returned as it is.
pub fn without_temp_path(e: io::Error) -> io::Error {
    let Some(inner) = e.get_ref() else {
        return e;
    };
    let text = inner.to_string();
    match text.rfind(" at path ") {
        Some(i) => io::Error::new(e.kind(), text[..i].to_string()),
        None => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_temporary_name_is_dropped_and_the_os_error_kept() {
        let dir = tempfile::tempdir().unwrap();
        let e = tempfile::NamedTempFile::new_in(dir.path().join("nodir")).unwrap_err();
        assert!(e.to_string().contains(".tmp"), "{e}");
        let plain = without_temp_path(e);
        assert_eq!(plain.kind(), io::ErrorKind::NotFound);
        assert!(!plain.to_string().contains(".tmp"), "{plain}");
        assert!(!plain.to_string().contains("nodir"), "{plain}");
        // Anything else passes through.
        let other = io::Error::other("x");
        assert_eq!(without_temp_path(other).to_string(), "x");
    }
}
