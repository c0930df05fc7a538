//! Packaging a local `working_dir` so Ray can use it.
//!
//! Ray's Serve REST API refuses a plain local path as `working_dir` (HTTP 400: "runtime_envs in
//! the Serve config support only remote URIs ..."). Three forms work, all verified on Ray 2.60:
//!
//! - `file:///abs/path/_ray_pkg_<hash>.zip` — what [`package_dir`] makes. Ray treats `file://`
//!   like a download: it copies and unzips the archive per node and **strips a single
//!   top-level folder** if the zip has one (as for GitHub archives). A flat zip whose only
//!   entry is a package folder (`mypkg/__init__.py`) would lose that folder, so this layout
//!   always wraps the files in one folder ([`PackageLayout::Wrapped`]). Ray caches the unpacked
//!   dir by URI, so the name must change when the content does: it carries a content hash.
//! - `gcs://_ray_pkg_<hash>.zip` after uploading the zip through the dashboard
//!   (`PUT /api/packages/gcs/<name>`, see [`crate::dashboard::DashboardClient::upload_package`]);
//!   Ray unpacks those as they are, so they must be flat ([`PackageLayout::Flat`]).
//! - `local:///abs/dir` — the directory used in place on every node (no copy, no isolation
//!   from later edits).
//!
//! Packages are deterministic: the same files give the same bytes and name (entries sorted,
//! fixed timestamps, permissions reduced to 0644/0755). `__pycache__`, `.git` and `*.pyc`
//! are left out, as are symlinks to directories.

use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;
use zip::write::SimpleFileOptions;

/// Prefix of package names, as Ray names its own uploads.
pub const PACKAGE_PREFIX: &str = "_ray_pkg_";

/// Folder that [`PackageLayout::Wrapped`] puts every file under.
pub const WRAPPED_DIR: &str = "working_dir";

/// Names skipped wherever they appear.
const SKIPPED_NAMES: &[&str] = &["__pycache__", ".git"];

/// Why a directory could not be packaged.
#[derive(Debug, Error)]
pub enum PackageError {
    /// The working dir does not exist or is not a directory.
    #[error("working_dir {path} is not a directory")]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// A file or directory could not be read, or the package not written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done (`read`, `write`, ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file name is not UTF-8, which zip entries need.
    #[error("file name {path} is not valid UTF-8")]
    NonUtf8Name {
        /// The file.
        path: PathBuf,
    },
    /// The package directory's path cannot be written in a `file://` URI Ray parses.
    #[error("package directory {path} cannot be used in a file:// URI (no spaces, '#', '?', '%')")]
    UnsafePath {
        /// The path.
        path: PathBuf,
    },
    /// The zip library failed.
    #[error("cannot build the zip for {path}: {source}")]
    Zip {
        /// The working dir.
        path: PathBuf,
        /// The zip error.
        #[source]
        source: zip::result::ZipError,
    },
}

/// How files are laid out in the zip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageLayout {
    /// Every file under one top-level folder ([`WRAPPED_DIR`]): for `file://` URIs, which Ray
    /// unpacks stripping that folder.
    Wrapped,
    /// Files at the zip's root: for `gcs://` uploads, which Ray unpacks as they are.
    Flat,
}

/// A packaged working dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// The zip's bytes.
    pub zip: Vec<u8>,
    /// Hex SHA-256 (first 32 digits) of the files' paths, modes and contents.
    pub hash: String,
    /// Number of files packaged.
    pub files: usize,
    /// Total size of the files packaged, in bytes.
    pub content_bytes: u64,
}

impl Package {
    /// The file name: `_ray_pkg_<hash>.zip`.
    pub fn file_name(&self) -> String {
        format!("{PACKAGE_PREFIX}{}.zip", self.hash)
    }

    /// The URI to use after [`crate::dashboard::DashboardClient::upload_package`]:
    /// `gcs://_ray_pkg_<hash>.zip`.
    pub fn gcs_uri(&self) -> String {
        format!("gcs://{}", self.file_name())
    }
}

/// Packages `dir` into `<packages_dir>/_ray_pkg_<hash>.zip` (wrapped layout; reused when it
/// already exists, otherwise written to a temp file and renamed) and returns its
/// `file:///...` URI for `runtime_env.working_dir`.
pub fn package_dir(dir: &Path, packages_dir: &Path) -> Result<String, PackageError> {
    let package = build_package(dir, PackageLayout::Wrapped)?;
    let path = write_package(&package, packages_dir)?;
    Ok(file_uri(&path))
}

/// The `file://` URI of an absolute path.
pub fn file_uri(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// Writes a package into `packages_dir` under its content-hash name, unless a file of that
/// name is already there, and returns the zip's absolute path.
pub fn write_package(package: &Package, packages_dir: &Path) -> Result<PathBuf, PackageError> {
    fs::create_dir_all(packages_dir).map_err(io("create", packages_dir))?;
    let packages_dir = fs::canonicalize(packages_dir).map_err(io("resolve", packages_dir))?;
    if packages_dir
        .to_string_lossy()
        .contains([' ', '#', '?', '%', '\n'])
    {
        return Err(PackageError::UnsafePath { path: packages_dir });
    }
    let target = packages_dir.join(package.file_name());
    if target.is_file() {
        return Ok(target);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let temp = packages_dir.join(format!(
        ".{}.tmp-{}-{nanos}",
        package.file_name(),
        std::process::id()
    ));
    let written = fs::File::create(&temp)
        .and_then(|mut file| {
            file.write_all(&package.zip)?;
            file.sync_all()
        })
        .map_err(io("write", &temp));
    if let Err(error) =
        written.and_then(|()| fs::rename(&temp, &target).map_err(io("rename into place", &target)))
    {
        let _ = fs::remove_file(&temp);
        return Err(error);
    }
    Ok(target)
}

struct Entry {
    /// Path inside the working dir, `/`-separated.
    name: String,
    path: PathBuf,
    kind: EntryKind,
}

enum EntryKind {
    Dir,
    File { executable: bool },
}

/// Zips `dir` in memory with the given layout.
pub fn build_package(dir: &Path, layout: PackageLayout) -> Result<Package, PackageError> {
    if !dir.is_dir() {
        return Err(PackageError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let mut entries = Vec::new();
    collect(dir, "", &mut entries)?;

    let zip_error = |source| PackageError::Zip {
        path: dir.to_path_buf(),
        source,
    };
    let mut hasher = Sha256::new();
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let base = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default());
    let prefix = match layout {
        PackageLayout::Wrapped => {
            writer
                .add_directory(format!("{WRAPPED_DIR}/"), base.unix_permissions(0o755))
                .map_err(zip_error)?;
            format!("{WRAPPED_DIR}/")
        }
        PackageLayout::Flat => String::new(),
    };
    let (mut files, mut content_bytes) = (0usize, 0u64);
    for entry in &entries {
        match entry.kind {
            EntryKind::Dir => {
                hasher.update(b"d\0");
                hasher.update(entry.name.as_bytes());
                hasher.update(b"\0");
                writer
                    .add_directory(
                        format!("{prefix}{}/", entry.name),
                        base.unix_permissions(0o755),
                    )
                    .map_err(zip_error)?;
            }
            EntryKind::File { executable } => {
                let content = fs::read(&entry.path).map_err(|source| PackageError::Io {
                    action: "read",
                    path: entry.path.clone(),
                    source,
                })?;
                hasher.update(if executable { b"x\0" } else { b"f\0" });
                hasher.update(entry.name.as_bytes());
                hasher.update(b"\0");
                hasher.update((content.len() as u64).to_le_bytes());
                hasher.update(&content);
                let mode = if executable { 0o755 } else { 0o644 };
                writer
                    .start_file(
                        format!("{prefix}{}", entry.name),
                        base.unix_permissions(mode),
                    )
                    .map_err(zip_error)?;
                writer
                    .write_all(&content)
                    .map_err(|source| PackageError::Io {
                        action: "compress",
                        path: entry.path.clone(),
                        source,
                    })?;
                files += 1;
                content_bytes += content.len() as u64;
            }
        }
    }
    let zip = writer.finish().map_err(zip_error)?.into_inner();
    let hash = hex::encode(hasher.finalize())[..32].to_string();
    Ok(Package {
        zip,
        hash,
        files,
        content_bytes,
    })
}

/// Walks `dir` in sorted order, skipping what Ray should not get.
fn collect(dir: &Path, prefix: &str, entries: &mut Vec<Entry>) -> Result<(), PackageError> {
    let mut children = Vec::new();
    for child in fs::read_dir(dir).map_err(io("read directory", dir))? {
        let child = child.map_err(io("read directory", dir))?;
        let path = child.path();
        let name = child
            .file_name()
            .into_string()
            .map_err(|_| PackageError::NonUtf8Name { path: path.clone() })?;
        children.push((name, path));
    }
    children.sort();
    for (name, path) in children {
        if SKIPPED_NAMES.contains(&name.as_str()) || name.ends_with(".pyc") {
            continue;
        }
        let link = fs::symlink_metadata(&path).map_err(io("read", &path))?;
        // Follow symlinks to files; skip symlinks to directories (they could loop).
        let meta = if link.file_type().is_symlink() {
            match fs::metadata(&path) {
                Ok(meta) if meta.is_file() => meta,
                _ => continue,
            }
        } else {
            link
        };
        let rel = format!("{prefix}{name}");
        if meta.is_dir() {
            entries.push(Entry {
                name: rel.clone(),
                path: path.clone(),
                kind: EntryKind::Dir,
            });
            collect(&path, &format!("{rel}/"), entries)?;
        } else if meta.is_file() {
            entries.push(Entry {
                name: rel,
                path,
                kind: EntryKind::File {
                    executable: is_executable(&meta),
                },
            });
        }
    }
    Ok(())
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PackageError + use<> {
    let path = path.to_path_buf();
    move |source| PackageError::Io {
        action,
        path,
        source,
    }
}

#[cfg(unix)]
fn is_executable(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &fs::Metadata) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(dir: &Path) {
        fs::create_dir_all(dir.join("mypkg/sub")).unwrap();
        fs::create_dir_all(dir.join("__pycache__")).unwrap();
        fs::create_dir_all(dir.join(".git")).unwrap();
        fs::write(dir.join("fruit.py"), "print('fruit')\n").unwrap();
        fs::write(dir.join("mypkg/__init__.py"), "").unwrap();
        fs::write(dir.join("mypkg/sub/data.txt"), "data").unwrap();
        fs::write(dir.join("mypkg/mod.pyc"), "compiled").unwrap();
        fs::write(dir.join("__pycache__/fruit.cpython-311.pyc"), "compiled").unwrap();
        fs::write(dir.join(".git/HEAD"), "ref").unwrap();
    }

    fn names(zip: &[u8]) -> Vec<String> {
        let archive = zip::ZipArchive::new(Cursor::new(zip)).unwrap();
        archive.file_names().map(str::to_string).collect()
    }

    #[test]
    fn same_content_same_package() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        sample(a.path());
        sample(b.path());
        let pa = build_package(a.path(), PackageLayout::Wrapped).unwrap();
        let pb = build_package(b.path(), PackageLayout::Wrapped).unwrap();
        assert_eq!(pa, pb);
        assert_eq!(pa.files, 3);
        assert_eq!(pa.content_bytes, 19);
        assert_eq!(pa.file_name(), format!("_ray_pkg_{}.zip", pa.hash));
        assert_eq!(pa.hash.len(), 32);

        fs::write(b.path().join("mypkg/sub/data.txt"), "Data").unwrap();
        let changed = build_package(b.path(), PackageLayout::Wrapped).unwrap();
        assert_ne!(changed.hash, pa.hash);
        // Skipped files do not change the hash.
        fs::write(a.path().join("__pycache__/x.pyc"), "other").unwrap();
        assert_eq!(
            build_package(a.path(), PackageLayout::Wrapped)
                .unwrap()
                .hash,
            pa.hash
        );
    }

    #[test]
    fn layouts() {
        let dir = tempfile::tempdir().unwrap();
        sample(dir.path());
        let wrapped = build_package(dir.path(), PackageLayout::Wrapped).unwrap();
        assert_eq!(
            names(&wrapped.zip),
            [
                "working_dir/",
                "working_dir/fruit.py",
                "working_dir/mypkg/",
                "working_dir/mypkg/__init__.py",
                "working_dir/mypkg/sub/",
                "working_dir/mypkg/sub/data.txt",
            ]
        );
        let flat = build_package(dir.path(), PackageLayout::Flat).unwrap();
        assert_eq!(
            names(&flat.zip),
            [
                "fruit.py",
                "mypkg/",
                "mypkg/__init__.py",
                "mypkg/sub/",
                "mypkg/sub/data.txt"
            ]
        );
        assert_eq!(flat.hash, wrapped.hash);
        assert_eq!(flat.gcs_uri(), format!("gcs://_ray_pkg_{}.zip", flat.hash));

        let mut archive = zip::ZipArchive::new(Cursor::new(&flat.zip)).unwrap();
        let mut text = String::new();
        archive
            .by_name("fruit.py")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "print('fruit')\n");
    }

    #[cfg(unix)]
    #[test]
    fn modes_and_symlinks() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        sample(dir.path());
        let script = dir.path().join("run.sh");
        fs::write(&script, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(dir.path().join("fruit.py"), dir.path().join("link.py"))
            .unwrap();
        std::os::unix::fs::symlink(dir.path().join("mypkg"), dir.path().join("loop")).unwrap();
        let package = build_package(dir.path(), PackageLayout::Flat).unwrap();
        let mut archive = zip::ZipArchive::new(Cursor::new(&package.zip)).unwrap();
        assert_eq!(
            archive
                .by_name("run.sh")
                .unwrap()
                .unix_mode()
                .map(|m| m & 0o777),
            Some(0o755)
        );
        assert_eq!(
            archive
                .by_name("fruit.py")
                .unwrap()
                .unix_mode()
                .map(|m| m & 0o777),
            Some(0o644)
        );
        assert!(archive.by_name("link.py").is_ok());
        assert!(archive.by_name("loop/").is_err());
    }

    #[test]
    fn package_dir_writes_once_and_returns_file_uri() {
        let dir = tempfile::tempdir().unwrap();
        sample(dir.path());
        let out = tempfile::tempdir().unwrap();
        let packages = out.path().join("packages");
        let uri = package_dir(dir.path(), &packages).unwrap();
        let hash = build_package(dir.path(), PackageLayout::Wrapped)
            .unwrap()
            .hash;
        let expected = fs::canonicalize(&packages)
            .unwrap()
            .join(format!("_ray_pkg_{hash}.zip"));
        assert_eq!(uri, format!("file://{}", expected.display()));
        assert!(expected.is_file());
        let modified = fs::metadata(&expected).unwrap().modified().unwrap();
        assert_eq!(package_dir(dir.path(), &packages).unwrap(), uri);
        assert_eq!(
            fs::metadata(&expected).unwrap().modified().unwrap(),
            modified
        );
        let leftovers: Vec<_> = fs::read_dir(&packages)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }

    #[test]
    fn errors_name_the_path() {
        let out = tempfile::tempdir().unwrap();
        let missing = out.path().join("nope");
        let err = package_dir(&missing, out.path()).unwrap_err();
        assert!(matches!(err, PackageError::NotADirectory { .. }));
        assert!(err.to_string().contains("nope"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        sample(dir.path());
        let spaced = out.path().join("with space");
        let err = package_dir(dir.path(), &spaced).unwrap_err();
        assert!(matches!(err, PackageError::UnsafePath { .. }), "{err}");
    }
}
