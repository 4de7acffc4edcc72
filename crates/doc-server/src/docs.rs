//! The in-memory document store.
//!
//! Documents are read once at startup and served from memory. Requests never
//! touch the filesystem, which is what makes path traversal impossible by
//! construction: a request can only name a key of the map built here.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::config::DocsLimits;

/// Longest slug accepted; anything longer is not a file name we would ship.
pub const MAX_SLUG_LEN: usize = 100;
/// Documents larger than this are skipped so that one stray file cannot
/// balloon the memory of every replica.
pub const MAX_DOC_BYTES: u64 = 1024 * 1024;

/// One document. The content is held once: searching folds case on the fly
/// instead of keeping a lower-cased copy, so the store costs about the size
/// of the files it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    pub slug: String,
    pub title: String,
    pub content: String,
}

impl Doc {
    #[must_use]
    pub fn new(slug: String, content: String) -> Self {
        let title = extract_title(&content).unwrap_or_else(|| slug.clone());
        Self {
            slug,
            title,
            content,
        }
    }

    fn matches(&self, needle: &Needle) -> bool {
        needle.found_in(&self.title) || needle.found_in(&self.content)
    }
}

/// A search term, lower-cased once per request.
struct Needle {
    /// `char::to_lowercase` of every char, the same folding applied to the
    /// text, so matching never depends on context-sensitive rules.
    chars: Vec<char>,
    /// The term is ASCII: ASCII text can be scanned byte by byte.
    ascii: Option<Vec<u8>>,
}

impl Needle {
    fn new(query: &str) -> Self {
        let chars: Vec<char> = query.chars().flat_map(char::to_lowercase).collect();
        let ascii = chars
            .iter()
            .all(char::is_ascii)
            .then(|| chars.iter().map(|&c| c as u8).collect());
        Self { chars, ascii }
    }

    /// Case-insensitive substring test without allocating.
    fn found_in(&self, text: &str) -> bool {
        match &self.ascii {
            Some(bytes) if text.is_ascii() => find_ascii_ci(text.as_bytes(), bytes),
            _ => find_chars_ci(text, &self.chars),
        }
    }
}

/// ASCII haystack, lower-case ASCII needle: jump between candidates for the
/// first byte (either case) with `memchr2`, then compare the rest.
fn find_ascii_ci(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    let mut at = 0;
    while let Some(i) = memchr::memchr2(first, first.to_ascii_uppercase(), &hay[at..]) {
        let start = at + i;
        let end = start + needle.len();
        if end > hay.len() {
            return false;
        }
        if hay[start + 1..end].eq_ignore_ascii_case(rest) {
            return true;
        }
        at = start + 1;
    }
    false
}

/// General case: the text's chars lower-cased one by one, matched with
/// Knuth-Morris-Pratt so the cost stays linear in the text.
fn find_chars_ci(text: &str, needle: &[char]) -> bool {
    if needle.is_empty() {
        return true;
    }
    let mut fail = vec![0usize; needle.len()];
    let mut k = 0;
    for i in 1..needle.len() {
        while k > 0 && needle[i] != needle[k] {
            k = fail[k - 1];
        }
        if needle[i] == needle[k] {
            k += 1;
        }
        fail[i] = k;
    }
    let mut matched = 0;
    for c in text.chars().flat_map(char::to_lowercase) {
        while matched > 0 && c != needle[matched] {
            matched = fail[matched - 1];
        }
        if c == needle[matched] {
            matched += 1;
            if matched == needle.len() {
                return true;
            }
        }
    }
    false
}

/// Why `DOCS_DIR` could not be loaded. `Display` is one line that names the
/// limit and what was found.
#[derive(Debug)]
pub enum LoadError {
    /// The directory cannot be resolved or listed.
    Io(io::Error),
    /// The documents add up to more bytes than `DOCS_MAX_BYTES`.
    TooLarge { bytes: u64, limit: u64 },
    /// More documents than `DOCS_MAX_COUNT`.
    TooMany { count: usize, limit: usize },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(err) => write!(f, "cannot be read ({err})"),
            Self::TooLarge { bytes, limit } => write!(
                f,
                "holds {bytes} bytes ({}) of documents, more than DOCS_MAX_BYTES={limit} ({}); \
                 raise DOCS_MAX_BYTES together with the pod's memory limit, or serve fewer documents",
                mib(*bytes),
                mib(*limit)
            ),
            Self::TooMany { count, limit } => write!(
                f,
                "holds {count} documents, more than DOCS_MAX_COUNT={limit}; \
                 raise DOCS_MAX_COUNT or serve fewer documents"
            ),
        }
    }
}

impl std::error::Error for LoadError {}

impl From<io::Error> for LoadError {
    fn from(err: io::Error) -> Self {
        Self::Io(err)
    }
}

#[allow(clippy::cast_precision_loss)] // a human-readable figure
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A file in `DOCS_DIR` that was not loaded, with the reason, so the caller
/// can log it: silently ignoring a mis-named doc is a common source of
/// "why is my page missing" tickets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocStore {
    docs: BTreeMap<String, Doc>,
}

impl DocStore {
    #[must_use]
    pub fn from_docs(docs: impl IntoIterator<Item = Doc>) -> Self {
        Self {
            docs: docs.into_iter().map(|d| (d.slug.clone(), d)).collect(),
        }
    }

    /// Loads every `*.md` file directly inside `dir` (no recursion), within
    /// the default [`DocsLimits`].
    ///
    /// # Errors
    /// See [`DocStore::load_within`].
    pub fn load(dir: &Path) -> Result<(Self, Vec<Skipped>), LoadError> {
        Self::load_within(dir, DocsLimits::default())
    }

    /// Loads every `*.md` file directly inside `dir` (no recursion).
    ///
    /// Files whose stem is not a valid slug, that resolve outside `dir`
    /// (e.g. via a symlink), that are too large or not UTF-8 are skipped and
    /// reported rather than failing the whole start-up. The sizes are added
    /// up before anything is read, so a tree over `limits` fails at once
    /// instead of filling the memory first.
    ///
    /// # Errors
    /// `dir` cannot be resolved or listed, or its documents exceed `limits`.
    pub fn load_within(dir: &Path, limits: DocsLimits) -> Result<(Self, Vec<Skipped>), LoadError> {
        let root = fs::canonicalize(dir)?;
        let mut skipped = Vec::new();

        let mut entries: Vec<PathBuf> = fs::read_dir(&root)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<io::Result<_>>()?;
        // Deterministic order makes the skip log stable between restarts.
        entries.sort();

        let mut candidates = Vec::new();
        let mut total: u64 = 0;
        for path in entries {
            if path.extension().and_then(|e| e.to_str()) != Some("md") {
                continue;
            }
            let mut skip = |reason: String| {
                skipped.push(Skipped {
                    path: path.clone(),
                    reason,
                });
            };
            let Some(slug) = path.file_stem().and_then(|s| s.to_str()) else {
                skip("file name is not valid UTF-8".to_owned());
                continue;
            };
            if !is_valid_slug(slug) {
                skip(format!(
                    "name {slug:?} is not a valid slug (lower-case a-z, 0-9, '-', '_'; at most {MAX_SLUG_LEN} characters)"
                ));
                continue;
            }
            match check_doc(&root, &path) {
                Ok((real, len)) => {
                    total = total.saturating_add(len);
                    candidates.push((slug.to_owned(), path.clone(), real));
                }
                Err(reason) => skip(reason),
            }
        }
        if candidates.len() > limits.max_count {
            return Err(LoadError::TooMany {
                count: candidates.len(),
                limit: limits.max_count,
            });
        }
        if total > limits.max_bytes {
            return Err(LoadError::TooLarge {
                bytes: total,
                limit: limits.max_bytes,
            });
        }

        let mut docs = BTreeMap::new();
        let mut read_total: u64 = 0;
        for (slug, path, real) in candidates {
            match read_doc(&real) {
                Ok(content) => {
                    // A file that grew since it was measured still counts.
                    read_total += content.len() as u64;
                    if read_total > limits.max_bytes {
                        return Err(LoadError::TooLarge {
                            bytes: read_total,
                            limit: limits.max_bytes,
                        });
                    }
                    docs.insert(slug.clone(), Doc::new(slug, content));
                }
                Err(reason) => skipped.push(Skipped { path, reason }),
            }
        }
        skipped.sort_by(|a, b| a.path.cmp(&b.path));
        Ok((Self { docs }, skipped))
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Exact-match lookup. Anything that is not a valid slug, including
    /// decoded traversal attempts such as `../etc/passwd`, is simply absent.
    #[must_use]
    pub fn get(&self, slug: &str) -> Option<&Doc> {
        self.docs.get(slug)
    }

    /// All documents, sorted by slug.
    pub fn iter(&self) -> impl Iterator<Item = &Doc> {
        self.docs.values()
    }

    /// Documents whose title or content contains `query`, ignoring case,
    /// sorted by slug.
    pub fn search(&self, query: &str) -> impl Iterator<Item = &Doc> {
        let needle = Needle::new(query);
        self.docs.values().filter(move |d| d.matches(&needle))
    }
}

/// The real path and size of a document that may be loaded.
fn check_doc(root: &Path, path: &Path) -> Result<(PathBuf, u64), String> {
    // Resolve symlinks and make sure the real file is still under DOCS_DIR,
    // so a link like `docs/x.md -> /etc/passwd` is never served.
    let real = fs::canonicalize(path).map_err(|e| format!("cannot resolve path ({e})"))?;
    if !real.starts_with(root) {
        return Err(format!(
            "resolves to {} which is outside DOCS_DIR",
            real.display()
        ));
    }
    let meta = fs::metadata(&real).map_err(|e| format!("cannot read metadata ({e})"))?;
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    if meta.len() > MAX_DOC_BYTES {
        return Err(format!(
            "{} bytes is larger than the {MAX_DOC_BYTES}-byte limit",
            meta.len()
        ));
    }
    Ok((real, meta.len()))
}

fn read_doc(real: &Path) -> Result<String, String> {
    let file = fs::File::open(real).map_err(|e| format!("cannot read file ({e})"))?;
    // Read one byte past the limit to notice a file that grew meanwhile.
    let mut bytes = Vec::new();
    file.take(MAX_DOC_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read file ({e})"))?;
    if bytes.len() as u64 > MAX_DOC_BYTES {
        return Err(format!("larger than the {MAX_DOC_BYTES}-byte limit"));
    }
    bytes.shrink_to_fit();
    String::from_utf8(bytes).map_err(|_| "content is not valid UTF-8".to_owned())
}

/// A slug is the file stem restricted to `[a-z0-9_-]`. The restriction is
/// what guarantees slugs are safe in URLs and can never contain `/`, `.`
/// or `\`.
#[must_use]
pub fn is_valid_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SLUG_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The title is the first level-1 ATX heading (`# Title`) if it is the first
/// non-blank line of the document; otherwise the caller falls back to the
/// slug. Only the first line is considered so that a `# comment` inside a
/// later code block is never mistaken for the title.
#[must_use]
pub fn extract_title(content: &str) -> Option<String> {
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    let first = content.lines().find(|l| !l.trim().is_empty())?;
    let rest = first.trim_start().strip_prefix('#')?;
    // `#Title` is not a heading in CommonMark, and `##` is a level-2 heading.
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    // Optional closing sequence: `# Title ##`.
    let title = rest.trim().trim_end_matches('#').trim_end();
    (!title.is_empty()).then(|| title.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_validation() {
        for ok in [
            "api",
            "getting-started",
            "v2_notes",
            "a",
            "0",
            &"a".repeat(100),
        ] {
            assert!(is_valid_slug(ok), "{ok}");
        }
        for bad in [
            "",
            "API",
            "has space",
            "../etc/passwd",
            "..",
            ".",
            "a/b",
            "a\\b",
            "/etc/passwd",
            "%2e%2e",
            "caf\u{e9}",
            "a.md",
            &"a".repeat(101),
        ] {
            assert!(!is_valid_slug(bad), "{bad}");
        }
    }

    #[test]
    fn title_from_first_heading() {
        assert_eq!(extract_title("# Hello\n\nbody"), Some("Hello".into()));
        assert_eq!(
            extract_title("\n\n#   Spaced out  \n"),
            Some("Spaced out".into())
        );
        assert_eq!(extract_title("# Closed ##\n"), Some("Closed".into()));
        assert_eq!(
            extract_title("\u{feff}# With BOM\n"),
            Some("With BOM".into())
        );
        assert_eq!(extract_title("# Tab\theading"), Some("Tab\theading".into()));
    }

    #[test]
    fn no_title_without_leading_h1() {
        assert_eq!(extract_title(""), None);
        assert_eq!(extract_title("   \n\n"), None);
        assert_eq!(extract_title("Intro text\n# Later heading"), None);
        assert_eq!(extract_title("## Second level"), None);
        assert_eq!(extract_title("#NoSpace"), None);
        assert_eq!(extract_title("#   \nbody"), None);
    }

    #[test]
    fn doc_falls_back_to_slug_for_title() {
        let doc = Doc::new("notes".into(), "just text".into());
        assert_eq!(doc.title, "notes");
    }

    fn store() -> DocStore {
        DocStore::from_docs([
            Doc::new(
                "b-config".into(),
                "# Configuration\nSet PORT to change the port.".into(),
            ),
            Doc::new(
                "a-intro".into(),
                "# Getting Started\nRun the binary.".into(),
            ),
            Doc::new(
                "c-ops".into(),
                "# Operations\nSend SIGTERM to drain.".into(),
            ),
        ])
    }

    fn slugs<'a>(docs: impl Iterator<Item = &'a Doc>) -> Vec<&'a str> {
        docs.map(|d| d.slug.as_str()).collect()
    }

    #[test]
    fn search_is_case_insensitive_over_title_and_content() {
        let s = store();
        assert_eq!(slugs(s.search("port")), ["b-config"]);
        assert_eq!(slugs(s.search("PORT")), ["b-config"]);
        assert_eq!(slugs(s.search("getting")), ["a-intro"]);
        assert_eq!(slugs(s.search("sigterm")), ["c-ops"]);
        assert_eq!(slugs(s.search("the")), ["a-intro", "b-config"]);
        assert!(s.search("nothing-matches-this").next().is_none());
    }

    #[test]
    fn search_folds_case_beyond_ascii() {
        let s = DocStore::from_docs([
            Doc::new("greek".into(), "# Οδός\nΜΕΓΑΛΟΣ δρόμος".into()),
            Doc::new("german".into(), "# Straße\nGRÜN und Blau".into()),
            Doc::new("kelvin".into(), "# Units\n300 \u{212a} is warm".into()),
        ]);
        assert_eq!(slugs(s.search("μεγαλοσ")), ["greek"]);
        assert_eq!(slugs(s.search("ΟΔΌ")), ["greek"]);
        assert_eq!(slugs(s.search("grün")), ["german"]);
        assert_eq!(slugs(s.search("STRASSE")), Vec::<&str>::new());
        // The Kelvin sign folds to an ASCII `k`, so a non-ASCII document is
        // searched char by char even for an ASCII term.
        assert_eq!(slugs(s.search("300 k")), ["kelvin"]);
        assert_eq!(slugs(s.search("blau")), ["german"]);
    }

    #[test]
    fn ascii_search_handles_edges() {
        assert!(find_ascii_ci(b"abc", b""));
        assert!(find_ascii_ci(b"xxAbC", b"abc"));
        assert!(!find_ascii_ci(b"xxAb", b"abc"));
        assert!(find_ascii_ci(b"aaab", b"aab"));
        assert!(find_chars_ci("aaab", &['a', 'a', 'b']));
        assert!(find_chars_ci("abababc", &['a', 'b', 'a', 'b', 'c']));
        assert!(!find_chars_ci("ababab", &['a', 'b', 'a', 'b', 'c']));
    }

    #[test]
    fn iteration_is_sorted_by_slug() {
        assert_eq!(slugs(store().iter()), ["a-intro", "b-config", "c-ops"]);
    }

    #[test]
    fn lookup_is_exact() {
        let s = store();
        assert!(s.get("a-intro").is_some());
        assert!(s.get("A-INTRO").is_none());
        assert!(s.get("a-intro.md").is_none());
        assert!(s.get("../a-intro").is_none());
    }

    #[test]
    fn shipped_docs_all_load_with_titles() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        let (store, skipped) = DocStore::load(&dir).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        assert!(store.len() >= 4);
        for doc in store.iter() {
            assert_ne!(doc.title, doc.slug, "{} has no `# Title` line", doc.slug);
        }
    }
}
