//! Input files from strangers (DESIGN.md principle 8): only regular files are opened, and text
//! inputs are read up to a size cap, so a FIFO never blocks, a device like `/dev/zero` is never
//! read without limit, and a directory or device gets a message saying what it is. Memory-mapped
//! inputs (safetensors, GGUF) go through [`check_regular`] before they are opened.
//!
//! Below every other module (it uses only `error`), so any layer may call it.

use crate::error::{Error, Result};
use std::io::{ErrorKind, Read};
use std::path::Path;

/// `config.json`, `generation_config.json`, `chat_template.jinja`: a few KiB in real models.
pub const CONFIG_CAP: u64 = 4 << 20;
/// `tokenizer_config.json`: some list every added token (hundreds of KiB).
pub const TOKENIZER_CONFIG_CAP: u64 = 16 << 20;
/// `tokenizer.json` (the largest real ones are ~35 MiB) and `model.safetensors.index.json`
/// (DeepSeek-V3's is ~9 MiB).
pub const LARGE_JSON_CAP: u64 = 64 << 20;
/// A prompt file (`wgmoe tokenize --file`).
pub const PROMPT_CAP: u64 = 16 << 20;

/// What a non-regular file is, for messages.
fn kind(t: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

fn not_regular(path: &Path, t: std::fs::FileType, what: &str) -> Error {
    let io_kind = if t.is_dir() {
        ErrorKind::IsADirectory
    } else {
        ErrorKind::InvalidInput
    };
    let msg = format!("is {}, not a regular file; give the path of a {what}", kind(t));
    Error::io(path, std::io::Error::new(io_kind, msg))
}

fn not_found(path: &Path, what: &str) -> Error {
    Error::io(
        path,
        std::io::Error::new(ErrorKind::NotFound, format!("no such file (a {what})")),
    )
}

/// The metadata of `path` (symlinks followed) if it is a regular file; `None` if nothing is there;
/// an error naming the path for anything else (a directory, FIFO, device, socket, no permission).
fn regular_meta(path: &Path, what: &str) -> Result<Option<std::fs::Metadata>> {
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_file() => Ok(Some(m)),
        Ok(m) => Err(not_regular(path, m.file_type(), what)),
        // A file where a folder is expected (`model.gguf/config.json`) also means nothing there.
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Check that `path` is a regular file (symlinks followed) before it is opened or memory-mapped:
/// an error naming the path and what it is otherwise. `what` names the input ("GGUF file").
pub fn check_regular(path: &Path, what: &str) -> Result<()> {
    match regular_meta(path, what)? {
        Some(_) => Ok(()),
        None => Err(not_found(path, what)),
    }
}

fn too_large(path: &Path, size: u64, cap: u64, what: &str) -> Error {
    Error::bad_input(format!(
        "{}: {} is more than the {} wgmoe reads from a {what}; check that this is the right file",
        path.display(),
        mib(size),
        mib(cap)
    ))
}

fn mib(bytes: u64) -> String {
    if bytes < 1 << 20 {
        format!("{bytes} bytes")
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

/// The bytes of the regular file `path`, at most `cap` of them, or `None` if nothing is there.
/// A directory, FIFO, device or socket is an error naming it (a FIFO is never opened, so this
/// never blocks), and so is a file larger than `cap`, with its size and the cap.
pub fn read_regular_opt(path: &Path, cap: u64, what: &str) -> Result<Option<Vec<u8>>> {
    let Some(meta) = regular_meta(path, what)? else {
        return Ok(None);
    };
    if meta.len() > cap {
        return Err(too_large(path, meta.len(), cap, what));
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // The path may have been swapped between the check and the open: check what was opened, and
    // never read more than the cap whatever it is.
    let opened = file.metadata().map_err(|e| Error::io(path, e))?;
    if !opened.file_type().is_file() {
        return Err(not_regular(path, opened.file_type(), what));
    }
    let mut bytes = Vec::with_capacity(opened.len().min(cap) as usize);
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > cap {
        return Err(too_large(path, bytes.len() as u64, cap, what));
    }
    Ok(Some(bytes))
}

/// [`read_regular_opt`] for a file that must be there.
pub fn read_regular(path: &Path, cap: u64, what: &str) -> Result<Vec<u8>> {
    read_regular_opt(path, cap, what)?.ok_or_else(|| not_found(path, what))
}

fn utf8(path: &Path, bytes: Vec<u8>, what: &str) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let msg = format!(
            "the {what} is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        );
        Error::io(path, std::io::Error::new(ErrorKind::InvalidData, msg))
    })
}

/// [`read_regular_opt`] as UTF-8 text.
pub fn read_text_opt(path: &Path, cap: u64, what: &str) -> Result<Option<String>> {
    read_regular_opt(path, cap, what)?
        .map(|b| utf8(path, b, what))
        .transpose()
}

/// [`read_regular`] as UTF-8 text.
pub fn read_text(path: &Path, cap: u64, what: &str) -> Result<String> {
    utf8(path, read_regular(path, cap, what)?, what)
}
