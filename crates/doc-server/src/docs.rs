//! The in-memory document store.
//!
//! Documents are read once at startup and served from memory. Requests never
//! touch the filesystem, which is what makes path traversal impossible by
//! construction: a request can only name a key of the map built here.
//!
//! Every answer that can be built in advance is built here, once: each
//! document's JSON, the list, and each document's entry in a list. A request
//! then hands out a reference to shared bytes, so a thousand clients reading
//! the largest document slowly cost one copy of it, not a thousand.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::body::Bytes;
use axum::http::HeaderValue;
use serde::Serialize;

use crate::config::DocsLimits;

/// Longest slug accepted; anything longer is not a file name we would ship.
pub const MAX_SLUG_LEN: usize = 100;
/// Documents larger than this are skipped so that one stray file cannot
/// balloon the memory of every replica.
pub const MAX_DOC_BYTES: u64 = 1024 * 1024;
/// Longest title kept, in characters; a longer first line is cut and ends
/// in `…`. Titles are repeated in the list and in every search answer.
pub const MAX_TITLE_CHARS: usize = 200;

/// One document. The content is held once as text: searching folds case on
/// the fly instead of keeping a lower-cased copy.
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

/// An answer prepared at load: its JSON and a strong validator for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub body: Bytes,
    /// A strong `ETag`, derived from the bytes alone, so every replica
    /// serving the same documents gives the same one.
    pub etag: HeaderValue,
}

impl Answer {
    fn new(body: Vec<u8>) -> Self {
        let etag = etag_for(&body);
        Self {
            body: Bytes::from(body),
            etag,
        }
    }

    /// Whether an `If-None-Match` header names this answer: `*`, or one of
    /// its entity tags (compared weakly, as RFC 9110 asks for this header).
    #[must_use]
    pub fn matches_if_none_match(&self, header: &HeaderValue) -> bool {
        let Ok(list) = header.to_str() else {
            return false;
        };
        let ours = self.etag.as_bytes();
        list.split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag).as_bytes() == ours)
    }
}

/// `"<length>-<FNV-1a 64>"` of the bytes: a strong validator (the bytes
/// decide it), cheap, and the same in every build and replica.
fn etag_for(bytes: &[u8]) -> HeaderValue {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    HeaderValue::from_str(&format!("\"{:x}-{hash:016x}\"", bytes.len()))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// Serializes `value` into a buffer of exactly its size: counted first, so
/// loading never holds a doubled buffer of the largest answer.
fn to_exact_json(value: &impl Serialize) -> Vec<u8> {
    struct Count(usize);
    impl Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serializing strings and integers into memory cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    let mut out = Vec::with_capacity(count.0);
    let _ = serde_json::to_writer(&mut out, value);
    out
}

#[derive(Serialize)]
struct DocJson<'a> {
    slug: &'a str,
    title: &'a str,
    content: &'a str,
}

#[derive(Serialize)]
struct SummaryJson<'a> {
    slug: &'a str,
    title: &'a str,
}

/// A document with its prepared answers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    doc: Doc,
    /// `{"slug":…,"title":…,"content":…}`
    answer: Answer,
    /// `{"slug":…,"title":…}`, this document's element of a list.
    summary: Bytes,
}

impl Entry {
    fn new(doc: Doc) -> Self {
        let answer = Answer::new(to_exact_json(&DocJson {
            slug: &doc.slug,
            title: &doc.title,
            content: &doc.content,
        }));
        let summary = Bytes::from(to_exact_json(&SummaryJson {
            slug: &doc.slug,
            title: &doc.title,
        }));
        Self {
            doc,
            answer,
            summary,
        }
    }

    /// Bytes this entry keeps in memory.
    fn held(&self) -> u64 {
        let d = &self.doc;
        (d.slug.len()
            + d.title.len()
            + d.content.len()
            + self.answer.body.len()
            + self.summary.len()) as u64
    }
}

/// Why a search ended before it had looked at every document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchStopped {
    /// Its deadline passed.
    Deadline,
    /// Nobody waits for the answer any more (the client left).
    Cancelled,
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
    let mut step = |c: char| {
        while matched > 0 && c != needle[matched] {
            matched = fail[matched - 1];
        }
        if c == needle[matched] {
            matched += 1;
        }
        matched == needle.len()
    };
    // Documents are mostly ASCII: those bytes are folded as bytes, and only
    // the other characters are decoded and folded in full.
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(&b) = bytes.get(at) {
        if b.is_ascii() {
            if step(char::from(b.to_ascii_lowercase())) {
                return true;
            }
            at += 1;
        } else {
            let c = text[at..].chars().next().unwrap_or_default();
            if c.to_lowercase().any(&mut step) {
                return true;
            }
            at += c.len_utf8().max(1);
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
    /// The documents take more memory than `DOCS_MAX_BYTES`: `files` bytes
    /// of files held as text and as JSON answers, `held` bytes in all (a
    /// lower bound when `at_least`, known before anything is read).
    TooLarge {
        files: u64,
        held: u64,
        limit: u64,
        at_least: bool,
    },
    /// More documents than `DOCS_MAX_COUNT`.
    TooMany { count: usize, limit: usize },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(err) => write!(f, "cannot be read ({err})"),
            Self::TooLarge {
                files,
                held,
                limit,
                at_least,
            } => write!(
                f,
                "holds {files} bytes ({}) of documents, which take {}{held} bytes ({}) in memory \
                 as text and as prepared answers, more than DOCS_MAX_BYTES={limit} ({}); \
                 raise DOCS_MAX_BYTES together with the pod's memory limit, or serve fewer documents",
                mib(*files),
                if *at_least { "at least " } else { "" },
                mib(*held),
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

/// The documents, sorted by slug, with every answer that does not depend
/// on the request already built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocStore {
    entries: Vec<Entry>,
    by_slug: BTreeMap<String, usize>,
    /// `[{"slug":…,"title":…},…]`, every document.
    list: Answer,
    held: u64,
}

impl Default for DocStore {
    fn default() -> Self {
        Self::from_docs([])
    }
}

impl DocStore {
    #[must_use]
    pub fn from_docs(docs: impl IntoIterator<Item = Doc>) -> Self {
        let sorted: BTreeMap<String, Doc> = docs.into_iter().map(|d| (d.slug.clone(), d)).collect();
        Self::from_entries(sorted.into_values().map(Entry::new).collect())
    }

    fn from_entries(entries: Vec<Entry>) -> Self {
        let by_slug = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.doc.slug.clone(), i))
            .collect();
        let mut list =
            Vec::with_capacity(2 + entries.iter().map(|e| e.summary.len() + 1).sum::<usize>());
        list.push(b'[');
        for (i, e) in entries.iter().enumerate() {
            if i > 0 {
                list.push(b',');
            }
            list.extend_from_slice(&e.summary);
        }
        list.push(b']');
        let list = Answer::new(list);
        let held = entries.iter().map(Entry::held).sum::<u64>() + list.body.len() as u64;
        Self {
            entries,
            by_slug,
            list,
            held,
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
    /// up before anything is read (each document is held at least twice: as
    /// text and as its JSON answer), so a tree over `limits` fails at once
    /// instead of filling the memory first; what the answers really take is
    /// checked as each one is built.
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
                    candidates.push((slug.to_owned(), path.clone(), real, len));
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
        if total.saturating_mul(2) > limits.max_bytes {
            return Err(LoadError::TooLarge {
                files: total,
                held: total.saturating_mul(2),
                limit: limits.max_bytes,
                at_least: true,
            });
        }

        let mut built = Vec::with_capacity(candidates.len());
        let mut files: u64 = 0;
        // The list repeats every summary, and its brackets.
        let mut held: u64 = 2;
        for (slug, path, real, len) in candidates {
            match read_doc(&real, len) {
                Ok(content) => {
                    // A file that grew since it was measured still counts.
                    files += content.len() as u64;
                    let entry = Entry::new(Doc::new(slug, content));
                    held += entry.held() + entry.summary.len() as u64 + 1;
                    if held > limits.max_bytes {
                        return Err(LoadError::TooLarge {
                            files,
                            held,
                            limit: limits.max_bytes,
                            at_least: false,
                        });
                    }
                    built.push(entry);
                }
                Err(reason) => skipped.push(Skipped { path, reason }),
            }
        }
        skipped.sort_by(|a, b| a.path.cmp(&b.path));
        Ok((Self::from_entries(built), skipped))
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes the documents and their prepared answers take in memory: what
    /// `DOCS_MAX_BYTES` bounds.
    #[must_use]
    pub fn held_bytes(&self) -> u64 {
        self.held
    }

    /// Exact-match lookup. Anything that is not a valid slug, including
    /// decoded traversal attempts such as `../etc/passwd`, is simply absent.
    #[must_use]
    pub fn get(&self, slug: &str) -> Option<&Doc> {
        self.by_slug.get(slug).map(|&i| &self.entries[i].doc)
    }

    /// The document's prepared JSON answer.
    #[must_use]
    pub fn answer(&self, slug: &str) -> Option<&Answer> {
        self.by_slug.get(slug).map(|&i| &self.entries[i].answer)
    }

    /// The list of every document, prepared.
    #[must_use]
    pub fn list(&self) -> &Answer {
        &self.list
    }

    /// All documents, sorted by slug.
    pub fn iter(&self) -> impl Iterator<Item = &Doc> {
        self.entries.iter().map(|e| &e.doc)
    }

    /// Documents whose title or content contains `query`, ignoring case,
    /// sorted by slug.
    pub fn search(&self, query: &str) -> impl Iterator<Item = &Doc> {
        let needle = Needle::new(query);
        self.iter().filter(move |d| d.matches(&needle))
    }

    /// Like [`DocStore::search`], as positions in the store, but it gives up
    /// between two documents once `deadline` has passed or `cancelled` is
    /// set: a search costs at most one document past either.
    ///
    /// # Errors
    /// Why it stopped early.
    pub fn search_until(
        &self,
        query: &str,
        deadline: Instant,
        cancelled: &AtomicBool,
    ) -> Result<Vec<u32>, SearchStopped> {
        let needle = Needle::new(query);
        let mut hits = Vec::new();
        for (i, entry) in self.entries.iter().enumerate() {
            if cancelled.load(Ordering::Relaxed) {
                return Err(SearchStopped::Cancelled);
            }
            if Instant::now() >= deadline {
                return Err(SearchStopped::Deadline);
            }
            if entry.doc.matches(&needle) {
                // DOCS_MAX_COUNT is at most a million.
                hits.push(u32::try_from(i).unwrap_or(u32::MAX));
            }
        }
        Ok(hits)
    }

    /// The list element (`{"slug":…,"title":…}`) of the document at
    /// `index`, as [`DocStore::search_until`] returns it.
    #[must_use]
    pub fn summary(&self, index: u32) -> Option<&Bytes> {
        self.entries.get(index as usize).map(|e| &e.summary)
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

fn read_doc(real: &Path, len: u64) -> Result<String, String> {
    let file = fs::File::open(real).map_err(|e| format!("cannot read file ({e})"))?;
    // Read one byte past the limit to notice a file that grew meanwhile;
    // sized up front, so the buffer is not grown (and copied) on the way.
    let mut bytes = Vec::with_capacity(usize::try_from(len + 1).unwrap_or(0));
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
    (!title.is_empty()).then(|| cap_title(title))
}

/// At most [`MAX_TITLE_CHARS`] characters, the last one `…` when cut.
fn cap_title(title: &str) -> String {
    match title.char_indices().nth(MAX_TITLE_CHARS - 1) {
        Some((cut, _)) if title[cut..].chars().nth(1).is_some() => {
            format!("{}…", &title[..cut])
        }
        _ => title.to_owned(),
    }
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
    fn long_titles_are_capped() {
        let exact = "é".repeat(MAX_TITLE_CHARS);
        assert_eq!(extract_title(&format!("# {exact}\n")), Some(exact.clone()));
        let long = format!("# {}\nbody", "é".repeat(1024 * 1024 / 2));
        let title = extract_title(&long).unwrap();
        assert_eq!(title.chars().count(), MAX_TITLE_CHARS);
        assert!(title.ends_with("é…"), "{title}");
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
        // Non-ASCII terms in mostly ASCII text, across the two kinds of
        // characters, and a partial match that must fall back.
        let mixed = DocStore::from_docs([Doc::new(
            "mixed".into(),
            "# Notes\nDie ÜBERPRÜFUNG der Sonden: überprüft, dann grüüün.".into(),
        )]);
        assert_eq!(slugs(mixed.search("die überprüfung")), ["mixed"]);
        assert_eq!(slugs(mixed.search("ÜBERPRÜFT, DANN")), ["mixed"]);
        assert_eq!(slugs(mixed.search("ÜÜN.")), ["mixed"]);
        assert_eq!(slugs(mixed.search("überprüfungen")), Vec::<&str>::new());
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
    fn answers_are_prepared_json_with_strong_etags() {
        let s = store();
        let answer = s.answer("b-config").unwrap();
        let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "slug": "b-config",
                "title": "Configuration",
                "content": "# Configuration\nSet PORT to change the port.",
            })
        );
        let list: serde_json::Value = serde_json::from_slice(&s.list().body).unwrap();
        assert_eq!(
            list,
            serde_json::json!([
                {"slug": "a-intro", "title": "Getting Started"},
                {"slug": "b-config", "title": "Configuration"},
                {"slug": "c-ops", "title": "Operations"},
            ])
        );
        assert_eq!(
            s.summary(1).unwrap(),
            &br#"{"slug":"b-config","title":"Configuration"}"#[..]
        );
        assert!(s.summary(3).is_none());
        // Strong (no W/), quoted, and a function of the bytes alone.
        let etag = answer.etag.to_str().unwrap();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
        assert_eq!(store().answer("b-config").unwrap().etag, answer.etag);
        assert_ne!(s.answer("a-intro").unwrap().etag, answer.etag);
        assert_ne!(s.list().etag, answer.etag);
        // The text once, the answer, the list element and the list.
        let expected: usize = s
            .iter()
            .map(|d| d.slug.len() + d.title.len() + d.content.len())
            .sum::<usize>()
            + ["a-intro", "b-config", "c-ops"]
                .iter()
                .map(|slug| s.answer(slug).unwrap().body.len())
                .sum::<usize>()
            + (0..3).map(|i| s.summary(i).unwrap().len()).sum::<usize>()
            + s.list().body.len();
        assert_eq!(s.held_bytes(), expected as u64);
    }

    #[test]
    fn if_none_match_compares_entity_tags() {
        let s = store();
        let answer = s.answer("a-intro").unwrap();
        let tag = answer.etag.to_str().unwrap().to_owned();
        let header = |v: &str| HeaderValue::from_str(v).unwrap();
        for hit in [
            tag.clone(),
            format!("W/{tag}"),
            "*".to_owned(),
            format!("\"nope\", {tag}"),
            format!("\"nope\",{tag} ,\"other\""),
        ] {
            assert!(answer.matches_if_none_match(&header(&hit)), "{hit}");
        }
        for miss in [
            "\"nope\"".to_owned(),
            tag.trim_matches('"').to_owned(),
            format!("{tag}x"),
            String::new(),
        ] {
            assert!(!answer.matches_if_none_match(&header(&miss)), "{miss}");
        }
    }

    #[test]
    fn a_search_stops_at_its_deadline_or_when_cancelled() {
        let s = store();
        let go = AtomicBool::new(false);
        let later = Instant::now() + std::time::Duration::from_secs(60);
        assert_eq!(s.search_until("the", later, &go), Ok(vec![0, 1]));
        assert_eq!(
            s.search_until("the", Instant::now(), &go),
            Err(SearchStopped::Deadline)
        );
        let stop = AtomicBool::new(true);
        assert_eq!(
            s.search_until("the", later, &stop),
            Err(SearchStopped::Cancelled)
        );
    }

    #[test]
    fn memory_for_the_answers_counts_against_the_limit() {
        let dir = std::env::temp_dir().join(format!("doc-server-docs-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        // 10 kB of a control character: 60 kB of JSON answer.
        fs::write(dir.join("ctl.md"), "\u{1}".repeat(10_000)).unwrap();
        let limits = |max_bytes| DocsLimits {
            max_bytes,
            max_count: 10,
        };
        let err = DocStore::load_within(&dir, limits(19_999)).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "holds 10000 bytes (0.0 MiB) of documents, which take at least 20000 bytes"
            ),
            "{err}"
        );
        let err = DocStore::load_within(&dir, limits(50_000)).unwrap_err();
        let LoadError::TooLarge { held, at_least, .. } = err else {
            panic!("{err}")
        };
        assert!(!at_least);
        assert!(held > 70_000, "{held}");
        let (store, _) = DocStore::load_within(&dir, limits(200_000)).unwrap();
        assert!(store.held_bytes() > 70_000 && store.held_bytes() < 200_000);
        fs::remove_dir_all(&dir).unwrap();
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
