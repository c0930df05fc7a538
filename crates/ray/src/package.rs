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
//! What goes in follows Ray's own packaging: `runtime_env.excludes` (gitignore patterns relative
//! to the working dir), and each folder's `.gitignore` and `.rayignore`; `__pycache__`, `.git`
//! and `*.pyc` are always left out. A symlink to a file inside the folder is followed, one to a
//! folder inside it is skipped (it could loop), and one leading out of the folder is refused.
//! `/proc`, `/sys` and `/dev` are never walked. The files may total at most
//! [`PackageOptions::max_bytes`] (Ray's own limit, 512 MiB).
//!
//! Packages are deterministic: the same files give the same bytes and name (entries sorted,
//! fixed timestamps, permissions reduced to 0644/0755). The content hash is computed first, by
//! streaming every file once; the zip is written only when no package of that hash exists, and
//! streamed to a temp file, never held in memory. All of it is blocking I/O: call it off the
//! async runtime (`spawn_blocking`).

use std::fs;
use std::io::{Cursor, Read, Seek, Write};
use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use sha2::{Digest, Sha256};
use thiserror::Error;
use zip::write::SimpleFileOptions;

/// Prefix of package names, as Ray names its own uploads.
pub const PACKAGE_PREFIX: &str = "_ray_pkg_";

/// Folder that [`PackageLayout::Wrapped`] puts every file under.
pub const WRAPPED_DIR: &str = "working_dir";

/// Ray's limit for a package (its maximum gRPC message size).
pub const MAX_PACKAGE_BYTES: u64 = 512 * 1024 * 1024;

/// Names skipped wherever they appear.
const SKIPPED_NAMES: &[&str] = &["__pycache__", ".git"];

/// Folders never walked: pseudo-filesystems whose files never end.
const PSEUDO_FILESYSTEMS: &[&str] = &["/proc", "/sys", "/dev"];

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
    /// The files are larger than Ray accepts.
    #[error(
        "working_dir {path} holds more than {max} bytes of files (Ray's limit); fix: leave large files out with runtime_env.excludes, .gitignore or .rayignore"
    )]
    TooLarge {
        /// The working dir.
        path: PathBuf,
        /// The limit.
        max: u64,
    },
    /// A symlink leads out of the working dir.
    #[error(
        "{link} is a symlink to {target}, outside working_dir {root}; fix: copy the file into the folder, or exclude the link with runtime_env.excludes"
    )]
    SymlinkOutside {
        /// The link.
        link: PathBuf,
        /// Where it leads.
        target: PathBuf,
        /// The working dir.
        root: PathBuf,
    },
    /// The working dir is a pseudo-filesystem.
    #[error("working_dir {path} is inside {fs}, which is never packaged")]
    PseudoFilesystem {
        /// The working dir.
        path: PathBuf,
        /// `/proc`, `/sys` or `/dev`.
        fs: &'static str,
    },
    /// An exclude pattern or an ignore file does not parse.
    #[error("runtime_env.excludes or an ignore file under {path}: {message}")]
    BadPattern {
        /// Where the pattern applies.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

/// What to leave out and how much to allow.
#[derive(Debug, Clone)]
pub struct PackageOptions {
    /// `runtime_env.excludes`: gitignore patterns relative to the working dir.
    pub excludes: Vec<String>,
    /// Honour `.gitignore` files (Ray does unless `RAY_RUNTIME_ENV_IGNORE_GITIGNORE` is set).
    pub include_gitignore: bool,
    /// Most bytes of files allowed.
    pub max_bytes: u64,
}

impl Default for PackageOptions {
    fn default() -> Self {
        PackageOptions {
            excludes: Vec::new(),
            include_gitignore: true,
            max_bytes: MAX_PACKAGE_BYTES,
        }
    }
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

/// A packaged working dir, in memory (for uploads).
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
        package_file_name(&self.hash)
    }

    /// The URI to use after [`crate::dashboard::DashboardClient::upload_package`]:
    /// `gcs://_ray_pkg_<hash>.zip`.
    pub fn gcs_uri(&self) -> String {
        format!("gcs://{}", self.file_name())
    }
}

fn package_file_name(hash: &str) -> String {
    format!("{PACKAGE_PREFIX}{hash}.zip")
}

/// Packages `dir` into `<packages_dir>/_ray_pkg_<hash>.zip` (wrapped layout; reused when it
/// already exists, otherwise streamed to a temp file and renamed) and returns its
/// `file:///...` URI for `runtime_env.working_dir`.
pub fn package_dir(
    dir: &Path,
    packages_dir: &Path,
    options: &PackageOptions,
) -> Result<String, PackageError> {
    let (entries, digest) = digest(dir, options)?;
    let packages_dir = packages_dir_path(packages_dir, true)?;
    let target = packages_dir.join(package_file_name(&digest.hash));
    if !target.is_file() {
        write_zip_file(dir, &entries, &target)?;
    }
    Ok(file_uri(&target))
}

/// The URI [`package_dir`] would return, computed by hashing only: nothing is written.
pub fn package_uri(
    dir: &Path,
    packages_dir: &Path,
    options: &PackageOptions,
) -> Result<String, PackageError> {
    let (_, digest) = digest(dir, options)?;
    let packages_dir = packages_dir_path(packages_dir, false)?;
    Ok(file_uri(
        &packages_dir.join(package_file_name(&digest.hash)),
    ))
}

/// The `file://` URI of an absolute path.
pub fn file_uri(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// The packages folder as an absolute path fit for a `file://` URI, created when `create`.
fn packages_dir_path(packages_dir: &Path, create: bool) -> Result<PathBuf, PackageError> {
    let absolute = if create {
        fs::create_dir_all(packages_dir).map_err(io("create", packages_dir))?;
        fs::canonicalize(packages_dir).map_err(io("resolve", packages_dir))?
    } else {
        match fs::canonicalize(packages_dir) {
            Ok(path) => path,
            Err(_) => std::path::absolute(packages_dir).map_err(io("resolve", packages_dir))?,
        }
    };
    if absolute
        .to_string_lossy()
        .contains([' ', '#', '?', '%', '\n'])
    {
        return Err(PackageError::UnsafePath { path: absolute });
    }
    Ok(absolute)
}

/// Streams the zip of `entries` into a temp file beside `target`, then renames it into place.
fn write_zip_file(dir: &Path, entries: &[Entry], target: &Path) -> Result<(), PackageError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = target.with_file_name(format!(".{name}.tmp-{}-{nanos}", std::process::id()));
    let written = fs::File::create(&temp)
        .map_err(io("write", &temp))
        .and_then(|file| write_zip(dir, entries, PackageLayout::Wrapped, file))
        .and_then(|file| file.sync_all().map_err(io("write", &temp)))
        .and_then(|()| fs::rename(&temp, target).map_err(io("rename into place", target)));
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

/// Zips `dir` in memory with the given layout (for uploads through the dashboard).
pub fn build_package(
    dir: &Path,
    layout: PackageLayout,
    options: &PackageOptions,
) -> Result<Package, PackageError> {
    let (entries, digest) = digest(dir, options)?;
    let zip = write_zip(dir, &entries, layout, Cursor::new(Vec::new()))?.into_inner();
    Ok(Package {
        zip,
        hash: digest.hash,
        files: digest.files,
        content_bytes: digest.content_bytes,
    })
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

/// The content hash of a working dir and what it counts.
struct DirDigest {
    hash: String,
    files: usize,
    content_bytes: u64,
}

/// Walks `dir` and hashes every file's path, mode and content, streaming, within the limit.
fn digest(dir: &Path, options: &PackageOptions) -> Result<(Vec<Entry>, DirDigest), PackageError> {
    if !dir.is_dir() {
        return Err(PackageError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let root = fs::canonicalize(dir).map_err(io("resolve", dir))?;
    if let Some(fs) = PSEUDO_FILESYSTEMS
        .iter()
        .find(|fs| root.starts_with(Path::new(fs)))
    {
        return Err(PackageError::PseudoFilesystem { path: root, fs });
    }
    let excludes = patterns(&root, &options.excludes)?;
    let mut walker = Walker {
        root: root.clone(),
        options,
        ignores: vec![excludes],
        entries: Vec::new(),
    };
    walker.collect(&root, "")?;
    let entries = walker.entries;

    let mut hasher = Sha256::new();
    let (mut files, mut content_bytes) = (0usize, 0u64);
    let mut buffer = vec![0u8; 64 * 1024];
    for entry in &entries {
        match entry.kind {
            EntryKind::Dir => {
                hasher.update(b"d\0");
                hasher.update(entry.name.as_bytes());
                hasher.update(b"\0");
            }
            EntryKind::File { executable } => {
                let mut file = fs::File::open(&entry.path).map_err(io("read", &entry.path))?;
                let len = file.metadata().map_err(io("read", &entry.path))?.len();
                content_bytes = content_bytes.saturating_add(len);
                if content_bytes > options.max_bytes {
                    return Err(PackageError::TooLarge {
                        path: dir.to_path_buf(),
                        max: options.max_bytes,
                    });
                }
                hasher.update(if executable { b"x\0" } else { b"f\0" });
                hasher.update(entry.name.as_bytes());
                hasher.update(b"\0");
                hasher.update(len.to_le_bytes());
                // Read exactly the length announced, so a growing file cannot exceed the limit.
                let mut rest = len;
                while rest > 0 {
                    let want =
                        usize::try_from(rest.min(buffer.len() as u64)).unwrap_or(buffer.len());
                    let read = file
                        .read(&mut buffer[..want])
                        .map_err(io("read", &entry.path))?;
                    if read == 0 {
                        break;
                    }
                    hasher.update(&buffer[..read]);
                    rest -= read as u64;
                }
                files += 1;
            }
        }
    }
    let hash = hex::encode(hasher.finalize())[..32].to_string();
    Ok((
        entries,
        DirDigest {
            hash,
            files,
            content_bytes,
        },
    ))
}

/// Writes the zip of `entries` into `out`, files streamed from disk.
fn write_zip<W: Write + Seek>(
    dir: &Path,
    entries: &[Entry],
    layout: PackageLayout,
    out: W,
) -> Result<W, PackageError> {
    let zip_error = |source| PackageError::Zip {
        path: dir.to_path_buf(),
        source,
    };
    let mut writer = zip::ZipWriter::new(out);
    let base = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default())
        .large_file(false);
    let prefix = match layout {
        PackageLayout::Wrapped => {
            writer
                .add_directory(format!("{WRAPPED_DIR}/"), base.unix_permissions(0o755))
                .map_err(zip_error)?;
            format!("{WRAPPED_DIR}/")
        }
        PackageLayout::Flat => String::new(),
    };
    for entry in entries {
        match entry.kind {
            EntryKind::Dir => {
                writer
                    .add_directory(
                        format!("{prefix}{}/", entry.name),
                        base.unix_permissions(0o755),
                    )
                    .map_err(zip_error)?;
            }
            EntryKind::File { executable } => {
                let mode = if executable { 0o755 } else { 0o644 };
                writer
                    .start_file(
                        format!("{prefix}{}", entry.name),
                        base.unix_permissions(mode),
                    )
                    .map_err(zip_error)?;
                let mut file = fs::File::open(&entry.path).map_err(io("read", &entry.path))?;
                std::io::copy(&mut file, &mut writer).map_err(io("compress", &entry.path))?;
            }
        }
    }
    writer.finish().map_err(zip_error)
}

/// Gitignore-style patterns rooted at `root`.
fn patterns(root: &Path, lines: &[String]) -> Result<Gitignore, PackageError> {
    let mut builder = GitignoreBuilder::new(root);
    for line in lines {
        builder
            .add_line(None, line)
            .map_err(|e| PackageError::BadPattern {
                path: root.to_path_buf(),
                message: e.to_string(),
            })?;
    }
    builder.build().map_err(|e| PackageError::BadPattern {
        path: root.to_path_buf(),
        message: e.to_string(),
    })
}

/// The `.gitignore` / `.rayignore` of one folder, rooted there; `None` when it has neither.
fn ignore_files(dir: &Path, include_gitignore: bool) -> Result<Option<Gitignore>, PackageError> {
    let mut builder = GitignoreBuilder::new(dir);
    let mut any = false;
    let names: &[&str] = if include_gitignore {
        &[".gitignore", ".rayignore"]
    } else {
        &[".rayignore"]
    };
    for name in names {
        let file = dir.join(name);
        if file.is_file() {
            any = true;
            if let Some(error) = builder.add(&file) {
                return Err(PackageError::BadPattern {
                    path: file,
                    message: error.to_string(),
                });
            }
        }
    }
    if !any {
        return Ok(None);
    }
    builder
        .build()
        .map(Some)
        .map_err(|e| PackageError::BadPattern {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })
}

struct Walker<'a> {
    root: PathBuf,
    options: &'a PackageOptions,
    /// Patterns in force: the excludes, then each enclosing folder's ignore files.
    ignores: Vec<Gitignore>,
    entries: Vec<Entry>,
}

impl Walker<'_> {
    fn ignored(&self, path: &Path, is_dir: bool) -> bool {
        self.ignores
            .iter()
            .any(|g| g.matched(path, is_dir).is_ignore())
    }

    /// Walks `dir` in sorted order, skipping what Ray should not get.
    fn collect(&mut self, dir: &Path, prefix: &str) -> Result<(), PackageError> {
        let own = ignore_files(dir, self.options.include_gitignore)?;
        let pushed = own.is_some();
        if let Some(own) = own {
            self.ignores.push(own);
        }
        let result = self.collect_children(dir, prefix);
        if pushed {
            self.ignores.pop();
        }
        result
    }

    fn collect_children(&mut self, dir: &Path, prefix: &str) -> Result<(), PackageError> {
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
            let meta = if link.file_type().is_symlink() {
                if self.ignored(&path, false) {
                    continue;
                }
                let target = match fs::canonicalize(&path) {
                    Ok(target) => target,
                    // A dangling link has nothing to package.
                    Err(_) => continue,
                };
                if !target.starts_with(&self.root) {
                    return Err(PackageError::SymlinkOutside {
                        link: path,
                        target,
                        root: self.root.clone(),
                    });
                }
                match fs::metadata(&path) {
                    // Follow links to files; skip links to folders (they could loop).
                    Ok(meta) if meta.is_file() => meta,
                    _ => continue,
                }
            } else {
                link
            };
            if self.ignored(&path, meta.is_dir()) {
                continue;
            }
            let rel = format!("{prefix}{name}");
            if meta.is_dir() {
                self.entries.push(Entry {
                    name: rel.clone(),
                    path: path.clone(),
                    kind: EntryKind::Dir,
                });
                self.collect(&path, &format!("{rel}/"))?;
            } else if meta.is_file() {
                self.entries.push(Entry {
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
        let pa =
            build_package(a.path(), PackageLayout::Wrapped, &PackageOptions::default()).unwrap();
        let pb =
            build_package(b.path(), PackageLayout::Wrapped, &PackageOptions::default()).unwrap();
        assert_eq!(pa, pb);
        assert_eq!(pa.files, 3);
        assert_eq!(pa.content_bytes, 19);
        assert_eq!(pa.file_name(), format!("_ray_pkg_{}.zip", pa.hash));
        assert_eq!(pa.hash.len(), 32);

        fs::write(b.path().join("mypkg/sub/data.txt"), "Data").unwrap();
        let changed =
            build_package(b.path(), PackageLayout::Wrapped, &PackageOptions::default()).unwrap();
        assert_ne!(changed.hash, pa.hash);
        // Skipped files do not change the hash.
        fs::write(a.path().join("__pycache__/x.pyc"), "other").unwrap();
        assert_eq!(
            build_package(a.path(), PackageLayout::Wrapped, &PackageOptions::default())
                .unwrap()
                .hash,
            pa.hash
        );
    }

    #[test]
    fn layouts() {
        let dir = tempfile::tempdir().unwrap();
        sample(dir.path());
        let wrapped = build_package(
            dir.path(),
            PackageLayout::Wrapped,
            &PackageOptions::default(),
        )
        .unwrap();
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
        let flat =
            build_package(dir.path(), PackageLayout::Flat, &PackageOptions::default()).unwrap();
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
        let package =
            build_package(dir.path(), PackageLayout::Flat, &PackageOptions::default()).unwrap();
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
        let uri = package_dir(dir.path(), &packages, &PackageOptions::default()).unwrap();
        let hash = build_package(
            dir.path(),
            PackageLayout::Wrapped,
            &PackageOptions::default(),
        )
        .unwrap()
        .hash;
        let expected = fs::canonicalize(&packages)
            .unwrap()
            .join(format!("_ray_pkg_{hash}.zip"));
        assert_eq!(uri, format!("file://{}", expected.display()));
        assert!(expected.is_file());
        let modified = fs::metadata(&expected).unwrap().modified().unwrap();
        assert_eq!(
            package_dir(dir.path(), &packages, &PackageOptions::default()).unwrap(),
            uri
        );
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
        let err = package_dir(&missing, out.path(), &PackageOptions::default()).unwrap_err();
        assert!(matches!(err, PackageError::NotADirectory { .. }));
        assert!(err.to_string().contains("nope"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        sample(dir.path());
        let spaced = out.path().join("with space");
        let err = package_dir(dir.path(), &spaced, &PackageOptions::default()).unwrap_err();
        assert!(matches!(err, PackageError::UnsafePath { .. }), "{err}");
    }

    #[test]
    fn excludes_and_ignore_files_are_honoured() {
        let dir = tempfile::tempdir().unwrap();
        sample(dir.path());
        fs::write(dir.path().join(".env"), "SECRET=1").unwrap();
        fs::create_dir_all(dir.path().join(".venv/lib")).unwrap();
        fs::write(dir.path().join(".venv/lib/big.so"), "x").unwrap();
        fs::write(dir.path().join("mypkg/.gitignore"), "*.txt\n").unwrap();
        fs::write(dir.path().join(".rayignore"), "fruit.py\n").unwrap();
        let options = PackageOptions {
            excludes: vec![".env".into(), ".venv/".into()],
            ..PackageOptions::default()
        };
        let package = build_package(dir.path(), PackageLayout::Flat, &options).unwrap();
        assert_eq!(
            names(&package.zip),
            [
                ".rayignore",
                "mypkg/",
                "mypkg/.gitignore",
                "mypkg/__init__.py",
                "mypkg/sub/"
            ]
        );
        // Without .gitignore (RAY_RUNTIME_ENV_IGNORE_GITIGNORE), the .txt comes back.
        let options = PackageOptions {
            include_gitignore: false,
            ..options
        };
        let package = build_package(dir.path(), PackageLayout::Flat, &options).unwrap();
        assert!(names(&package.zip).contains(&"mypkg/sub/data.txt".to_string()));
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_out_of_the_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        sample(dir.path());
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("leak")).unwrap();
        let err =
            build_package(dir.path(), PackageLayout::Flat, &PackageOptions::default()).unwrap_err();
        assert!(matches!(err, PackageError::SymlinkOutside { .. }), "{err}");
        assert!(err.to_string().contains("leak"), "{err}");
        // Excluding the link is the way out.
        let options = PackageOptions {
            excludes: vec!["leak".into()],
            ..PackageOptions::default()
        };
        assert!(build_package(dir.path(), PackageLayout::Flat, &options).is_ok());
    }

    #[test]
    fn too_large_a_folder_and_pseudo_filesystems_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        sample(dir.path());
        let options = PackageOptions {
            max_bytes: 10,
            ..PackageOptions::default()
        };
        let out = tempfile::tempdir().unwrap();
        let err = package_dir(dir.path(), out.path(), &options).unwrap_err();
        assert!(matches!(err, PackageError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("excludes"), "{err}");
        assert_eq!(
            fs::read_dir(out.path()).unwrap().count(),
            0,
            "nothing written"
        );
        let err = package_dir(
            Path::new("/proc/self"),
            out.path(),
            &PackageOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, PackageError::PseudoFilesystem { .. }),
            "{err}"
        );
    }

    #[test]
    fn the_uri_alone_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        sample(dir.path());
        let out = tempfile::tempdir().unwrap();
        let packages = out.path().join("packages");
        let options = PackageOptions::default();
        let uri = package_uri(dir.path(), &packages, &options).unwrap();
        assert!(
            !packages.exists(),
            "package_uri created {}",
            packages.display()
        );
        assert_eq!(package_dir(dir.path(), &packages, &options).unwrap(), uri);
    }
}
