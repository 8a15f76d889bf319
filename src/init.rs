//! `planrun init`: the files a repository of plans starts from — a base with the steps,
//! production and staging extending it, and the schema their modeline points at, so an
//! editor completes and checks them from the first keystroke.

use std::path::{Path, PathBuf};

use crate::validate::schema;

/// What `init` writes, relative to its folder: the files under `src/init/`, and the schema.
pub fn scaffold() -> Vec<(&'static str, String)> {
    vec![
        ("plans/base.yaml", include_str!("init/base.yaml").to_string()),
        ("plans/production.yaml", include_str!("init/production.yaml").to_string()),
        ("plans/staging.yaml", include_str!("init/staging.yaml").to_string()),
        ("schemas/plan.schema.json", schema::plan_schema_text()),
    ]
}

/// Why `init` wrote nothing.
#[derive(Debug)]
pub enum InitError {
    /// These files exist; `init` never overwrites.
    Exists(Vec<PathBuf>),
    Io(PathBuf, std::io::Error),
}

/// Writes the scaffold into `dir`, or nothing at all when any of its files exists, so a
/// second `init` cannot clobber plans someone has edited. Returns the files written.
pub fn init(dir: &Path) -> Result<Vec<PathBuf>, InitError> {
    let files: Vec<(PathBuf, String)> = scaffold().into_iter().map(|(rel, text)| (dir.join(rel), text)).collect();
    let existing: Vec<PathBuf> = files.iter().filter(|(p, _)| p.exists()).map(|(p, _)| p.clone()).collect();
    if !existing.is_empty() {
        return Err(InitError::Exists(existing));
    }
    let mut written = Vec::new();
    for (path, text) in files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| InitError::Io(parent.to_path_buf(), e))?;
        }
        // `create_new`: a file that appeared since the check above is still not overwritten.
        let result = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()));
        result.map_err(|e| InitError::Io(path.clone(), e))?;
        written.push(path);
    }
    Ok(written)
}
