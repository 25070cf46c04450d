//! Diagnostics: every error and warning of a run, with file:line:col and the offending text.
//!
//! The generator never stops at the first problem: loading and planning push diagnostics
//! here and go on, and the CLI renders all of them together with miette.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteError, MietteSpanContents, Severity as MSeverity,
    SourceCode, SourceSpan, SpanContents,
};

use crate::source::{LineIndex, Span};

/// Index of a file in [`Files`].
pub type FileId = usize;

/// A file the generator read.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path relative to the project folder, with `/` separators (shown in diagnostics).
    pub name: String,
    /// Absolute path on disk.
    pub path: PathBuf,
    /// The file's text.
    pub text: Arc<str>,
    /// Its line index, built on first use (positions in a large document are asked for
    /// many times).
    lines: Arc<std::sync::OnceLock<LineIndex>>,
}

impl SourceFile {
    /// `(line, column)` of a byte offset, 1-based.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        self.lines.get_or_init(|| LineIndex::new(&self.text)).line_col(offset)
    }
}

/// Every file read during a run.
#[derive(Debug, Default, Clone)]
pub struct Files {
    files: Vec<SourceFile>,
}

impl Files {
    /// Registers a file and returns its id.
    pub fn add(&mut self, name: String, path: PathBuf, text: String) -> FileId {
        self.files.push(SourceFile { name, path, text: Arc::from(text), lines: Arc::default() });
        self.files.len() - 1
    }

    /// Appends copies of `other`'s files, their names prefixed with `prefix` (the project's
    /// name in a build of several projects); returns the id offset of the copies.
    pub fn append(&mut self, other: &Files, prefix: &str) -> usize {
        let offset = self.files.len();
        self.files.extend(other.files.iter().map(|f| SourceFile { name: format!("{prefix}{}", f.name), ..f.clone() }));
        offset
    }

    /// A file by id.
    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id]
    }

    /// All files in the order they were read.
    pub fn iter(&self) -> impl Iterator<Item = &SourceFile> {
        self.files.iter()
    }

    /// `name:line:col` of a position.
    pub fn position(&self, id: FileId, offset: usize) -> String {
        let f = self.get(id);
        let (line, col) = f.line_col(offset);
        format!("{}:{line}:{col}", f.name)
    }
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Generation goes on; the output is still written.
    Warning,
    /// Nothing is written.
    Error,
}

/// Where a diagnostic points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub file: FileId,
    /// The offending text.
    pub span: Span,
}

/// One error or warning.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The message (one line, lower case, no full stop).
    pub message: String,
    /// Where it points, if anywhere.
    pub location: Option<Location>,
    /// Text under the caret.
    pub label: Option<String>,
    /// A hint on how to fix it.
    pub help: Option<String>,
}

/// The diagnostics of a run.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics {
    list: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Adds an error at a location.
    pub fn error(&mut self, at: impl Into<Option<Location>>, message: impl Into<String>) -> &mut Diagnostic {
        self.push(Severity::Error, at.into(), message.into())
    }

    /// Adds a warning at a location.
    pub fn warning(&mut self, at: impl Into<Option<Location>>, message: impl Into<String>) -> &mut Diagnostic {
        self.push(Severity::Warning, at.into(), message.into())
    }

    fn push(&mut self, severity: Severity, location: Option<Location>, message: String) -> &mut Diagnostic {
        self.list.push(Diagnostic { severity, message, location, label: None, help: None });
        let last = self.list.len() - 1;
        &mut self.list[last]
    }

    /// Whether any error was reported.
    pub fn has_errors(&self) -> bool {
        self.list.iter().any(|d| d.severity == Severity::Error)
    }

    /// Number of errors and warnings.
    pub fn counts(&self) -> (usize, usize) {
        let errors = self.list.iter().filter(|d| d.severity == Severity::Error).count();
        (errors, self.list.len() - errors)
    }

    /// All diagnostics in the order they were found.
    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.list.iter()
    }

    /// Moves the diagnostics of `other` into this list.
    pub fn extend(&mut self, other: Diagnostics) {
        self.list.extend(other.list);
    }

    /// Moves the diagnostics of `other` into this list, their file ids shifted by `offset`
    /// (see [`Files::append`]).
    pub fn extend_shifted(&mut self, other: Diagnostics, offset: usize) {
        self.list.extend(other.list.into_iter().map(|mut d| {
            if let Some(l) = &mut d.location {
                l.file += offset;
            }
            d
        }));
    }

    /// Renders every diagnostic (sorted by file and position, errors and warnings together)
    /// and a summary line. `color` selects ANSI colours.
    pub fn render(&self, files: &Files, color: bool) -> String {
        self.render_with_width(files, color, 100)
    }

    /// [`Diagnostics::render`] wrapping text at `width` columns.
    pub fn render_with_width(&self, files: &Files, color: bool, width: usize) -> String {
        let theme = if color { GraphicalTheme::unicode() } else { GraphicalTheme::unicode_nocolor() };
        let handler = GraphicalReportHandler::new_themed(theme).with_width(width).with_links(false);
        let mut sorted: Vec<&Diagnostic> = self.list.iter().collect();
        sorted.sort_by_key(|d| d.location.map(|l| (l.file, l.span.start)).unwrap_or((usize::MAX, 0)));
        let mut out = String::new();
        for d in sorted {
            let report = Report::new(d, files);
            if handler.render_report(&mut out, &report).is_err() {
                out.push_str(&d.message);
            }
            out.push('\n');
        }
        let (e, w) = self.counts();
        if e + w > 0 {
            out.push_str(&format!("{e} error{}, {w} warning{}\n", plural(e), plural(w)));
        }
        out
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

impl Diagnostic {
    /// Sets the text under the caret.
    pub fn label(&mut self, label: impl Into<String>) -> &mut Self {
        self.label = Some(label.into());
        self
    }

    /// Sets a hint.
    pub fn help(&mut self, help: impl Into<String>) -> &mut Self {
        self.help = Some(help.into());
        self
    }
}

/// A file as miette sees it, with columns counted in characters (a BOM not counted), as
/// editors and our own `file:line:col` prefix count them; miette alone counts bytes.
struct CharColumns {
    name: String,
    text: Arc<str>,
    index: LineIndex,
}

impl SourceCode for CharColumns {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let inner = (*self.text).read_span(span, before, after)?;
        let (_, col) = self.index.line_col(inner.span().offset());
        Ok(Box::new(MietteSpanContents::new_named(
            self.name.clone(),
            inner.data(),
            *inner.span(),
            inner.line(),
            col.saturating_sub(1),
            inner.line_count(),
        )))
    }
}

/// Adapter from a [`Diagnostic`] to miette's reporting traits.
struct Report {
    message: String,
    severity: Severity,
    help: Option<String>,
    source: Option<CharColumns>,
    labels: Vec<LabeledSpan>,
}

impl Report {
    fn new(d: &Diagnostic, files: &Files) -> Self {
        let (source, labels, message) = match d.location {
            Some(loc) => {
                let f = files.get(loc.file);
                let start = loc.span.start.min(f.text.len());
                let end = loc.span.end.clamp(start, f.text.len());
                let label = LabeledSpan::new(d.label.clone(), start, end - start);
                (
                    Some(CharColumns { name: f.name.clone(), index: LineIndex::new(&f.text), text: f.text.clone() }),
                    vec![label],
                    format!("{}: {}", files.position(loc.file, start), d.message),
                )
            }
            None => (None, Vec::new(), d.message.clone()),
        };
        Report { message, severity: d.severity, help: d.help.clone(), source, labels }
    }
}

impl fmt::Debug for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Report {}

impl miette::Diagnostic for Report {
    fn severity(&self) -> Option<MSeverity> {
        Some(match self.severity {
            Severity::Error => MSeverity::Error,
            Severity::Warning => MSeverity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() { None } else { Some(Box::new(self.labels.iter().cloned())) }
    }
}
