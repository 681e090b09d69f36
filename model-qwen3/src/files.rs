//! Files named by a user or by another file (configs, datasets, model folders, shard indexes, `latest`):
//! only regular files are opened, without blocking (a FIFO or a device would hang or never end), and a
//! name read from a file that should stay inside its folder must be a plain name, not a path.
use crate::error::{ModelError, Result};
use std::fs::File;
use std::path::Path;

fn err(path: &Path, msg: impl Into<String>) -> ModelError {
    ModelError::Checkpoint { file: path.display().to_string(), msg: msg.into() }
}

/// Open `path` for reading if it is a regular file (symbolic links followed). The open does not block
/// on a FIFO, and the check is made on the opened file, so a path swapped after a check cannot slip by.
pub fn open_regular(path: &Path) -> Result<File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let f = opts.open(path).map_err(|e| err(path, e.to_string()))?;
    let meta = f.metadata().map_err(|e| err(path, e.to_string()))?;
    if !meta.is_file() {
        return Err(err(path, "not a regular file"));
    }
    Ok(f)
}

/// The whole of a regular file as bytes.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut f = open_regular(path)?;
    let mut v = Vec::new();
    f.read_to_end(&mut v).map_err(|e| err(path, e.to_string()))?;
    Ok(v)
}

/// The whole of a regular file as UTF-8 text.
pub fn read_to_string(path: &Path) -> Result<String> {
    String::from_utf8(read(path)?).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        err(path, format!("not UTF-8 text (invalid byte at offset {at})"))
    })
}

/// `name` (read from `what`) if it is a plain file name: not empty, no path separator, not `.` or `..`.
pub fn plain_name<'a>(name: &'a str, what: &str) -> std::result::Result<&'a str, String> {
    let plain = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0']);
    if plain {
        Ok(name)
    } else {
        Err(format!("{what} names {name:?}, which is not a plain file name inside its folder"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_and_regular_files() {
        assert!(plain_name("model-00001-of-00004.safetensors", "index").is_ok());
        for bad in ["", ".", "..", "../x", "/etc/passwd", "a/b", "a\\b"] {
            assert!(plain_name(bad, "index").is_err(), "{bad:?}");
        }
        let dir = std::env::temp_dir().join(format!("entrl-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = read(&dir).unwrap_err().to_string();
        assert!(e.contains("not a regular file") || e.contains("directory"), "{e}");
        #[cfg(unix)]
        {
            let fifo = dir.join("fifo");
            let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            let e = read(&fifo).unwrap_err().to_string();
            assert!(e.contains("not a regular file"), "{e}");
        }
        std::fs::write(dir.join("bad.txt"), b"ok\xff").unwrap();
        assert!(read_to_string(&dir.join("bad.txt")).unwrap_err().to_string().contains("offset 2"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
