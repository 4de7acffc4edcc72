//! The in-memory document store.
//!
//! Documents are read once at startup and served from memory. Requests never
//! touch the filesystem, which is what makes path traversal impossible by
//! construction: a request can only name a key of the map built here.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Longest slug accepted; anything longer is not a file name we would ship.
pub const MAX_SLUG_LEN: usize = 100;
/// Documents larger than this are skipped so that one stray file cannot
/// balloon the memory of every replica.
pub const MAX_DOC_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    pub slug: String,
    pub title: String,
    pub content: String,
    /// Lower-cased title and content, computed once so that searches do not
    /// re-fold every document on every request.
    search_text: String,
}

impl Doc {
    #[must_use]
    pub fn new(slug: String, content: String) -> Self {
        let title = extract_title(&content).unwrap_or_else(|| slug.clone());
        let search_text = format!("{title}\n{content}").to_lowercase();
        Self {
            slug,
            title,
            content,
            search_text,
        }
    }

    /// Case-insensitive substring match on title or content.
    /// `needle_lower` must already be lower-cased.
    fn matches(&self, needle_lower: &str) -> bool {
        self.search_text.contains(needle_lower)
    }
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

    /// Loads every `*.md` file directly inside `dir` (no recursion).
    ///
    /// Files whose stem is not a valid slug, that resolve outside `dir`
    /// (e.g. via a symlink), that are too large or not UTF-8 are skipped and
    /// reported rather than failing the whole start-up.
    ///
    /// # Errors
    /// Fails only if `dir` itself cannot be resolved or listed.
    pub fn load(dir: &Path) -> io::Result<(Self, Vec<Skipped>)> {
        let root = fs::canonicalize(dir)?;
        let mut docs = BTreeMap::new();
        let mut skipped = Vec::new();

        let mut entries: Vec<PathBuf> = fs::read_dir(&root)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<io::Result<_>>()?;
        // Deterministic order makes the skip log stable between restarts.
        entries.sort();

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
            match read_doc(&root, &path) {
                Ok(content) => {
                    docs.insert(slug.to_owned(), Doc::new(slug.to_owned(), content));
                }
                Err(reason) => skip(reason),
            }
        }
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
        let needle = query.to_lowercase();
        self.docs.values().filter(move |d| d.matches(&needle))
    }
}

fn read_doc(root: &Path, path: &Path) -> Result<String, String> {
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
    let bytes = fs::read(&real).map_err(|e| format!("cannot read file ({e})"))?;
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
