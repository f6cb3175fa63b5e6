//! A small, total shell reader: it splits a command line into pipelines of simple commands,
//! removes quoting the way a POSIX shell would (`r''m`, `\rm`, `"rm"` and `$'\x72m'` are all
//! `rm`), and follows command substitutions (`$(...)`, backticks, `<(...)`) into their own
//! commands. It never fails: unbalanced quotes or substitutions end at the end of the input and
//! are reported in [`Script::warnings`] so the caller can treat the text as suspicious.
//!
//! The result is flat, so that reading a long script costs a handful of allocations rather than
//! several per command: one vector of words, one of redirections and one of commands (each a
//! range of the word and redirection vectors). A word's text is a range of the input when quote
//! removal left it unchanged, or else of one buffer that holds every changed word. Every word
//! keeps the byte span of its raw text in the original string, so a match can be highlighted
//! exactly where a person will read it.

use std::cell::RefCell;
use std::ops::Range;

/// How deep substitutions and `sh -c` payloads are followed before giving up.
pub const MAX_DEPTH: usize = 8;

/// The longest text read (64 MiB). Offsets are kept as 32 bits, and payloads copy their text,
/// at most once per level of [`MAX_DEPTH`]: within this, no offset can overflow.
pub const MAX_LEN: usize = 64 << 20;

/// Where a word's text lives: a range of the input, or of the script's buffer of unquoted text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Text {
    start: u32,
    end: u32,
    owned: bool,
}

impl Text {
    /// The part `range` of this text (a range of the text itself).
    pub(crate) fn slice(self, range: Range<usize>) -> Text {
        Text {
            start: self.start.saturating_add(to_u32(range.start)),
            end: self.start.saturating_add(to_u32(range.end)),
            owned: self.owned,
        }
    }
}

/// One word after quote removal, with the span of its raw text in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Word {
    pub(crate) text: Text,
    start: u32,
    end: u32,
    /// Whether the text (after quote removal) starts with `-`: a flag, for the analysis.
    pub(crate) dashed: bool,
}

impl Word {
    /// Byte span of the word's raw text in the input (of the whole payload, for the words of an
    /// `sh -c` payload whose text quote removal changed).
    pub fn span(&self) -> Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// A redirection such as `> /dev/sda` (operator and target word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redirect {
    op: Text,
    pub target: Word,
}

/// A command: its words and redirections, before wrappers such as `sudo` are looked through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command {
    words: (u32, u32),
    redirects: (u32, u32),
    /// The first command of its pipeline (commands joined by `|` or `|&` follow it).
    pub starts_pipeline: bool,
    /// How many substitutions or payloads deep it was found.
    pub depth: u8,
}

impl Command {
    pub(crate) fn word_range(&self) -> Range<usize> {
        self.words.0 as usize..self.words.1 as usize
    }

    pub(crate) fn redirect_range(&self) -> Range<usize> {
        self.redirects.0 as usize..self.redirects.1 as usize
    }
}

/// Something about the text that prevented a complete reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Warning {
    /// A quote, `$(`, `${` or backtick was never closed.
    Unterminated,
    /// Substitutions or `sh -c` payloads nest deeper than [`MAX_DEPTH`].
    TooDeep,
    /// The text is longer than [`MAX_LEN`] bytes and was not read.
    TooLong,
}

/// Everything read from one command line, substitutions included.
#[derive(Debug, Clone, Default)]
pub struct Script<'a> {
    src: &'a str,
    /// The text of every word that quote removal changed, one after another.
    buf: String,
    words: Vec<Word>,
    redirects: Vec<Redirect>,
    commands: Vec<Command>,
    warnings: Vec<Warning>,
    /// [`plain_bits`] of `src`, kept for reading payloads that are parts of it.
    plain: Vec<u64>,
    /// Substitutions found by the readings under way and not read yet, as ranges of their
    /// source: each reading reads its own (appended after what was there when it started)
    /// and removes them, so one vector serves every depth.
    nested: Vec<Range<usize>>,
}

/// The vectors of a dropped [`Script`], kept for the next reading on the same thread, so that
/// a reading allocates nothing once its thread has read a text as long.
#[derive(Default)]
struct Spare {
    buf: String,
    words: Vec<Word>,
    redirects: Vec<Redirect>,
    commands: Vec<Command>,
    plain: Vec<u64>,
    nested: Vec<Range<usize>>,
}

thread_local! {
    static SPARE: RefCell<Spare> = const {
        RefCell::new(Spare {
            buf: String::new(),
            words: Vec::new(),
            redirects: Vec::new(),
            commands: Vec::new(),
            plain: Vec::new(),
            nested: Vec::new(),
        })
    };
}

/// Vectors holding more than this many bytes in all are freed rather than kept: one very
/// long text does not leave its memory with the thread.
pub(crate) const KEEP_AT_MOST: usize = 1 << 20;

impl Drop for Script<'_> {
    fn drop(&mut self) {
        use std::mem::{size_of, take};
        let kept = self.buf.capacity()
            + self.words.capacity() * size_of::<Word>()
            + self.redirects.capacity() * size_of::<Redirect>()
            + self.commands.capacity() * size_of::<Command>()
            + self.plain.capacity() * size_of::<u64>()
            + self.nested.capacity() * size_of::<Range<usize>>();
        if kept > KEEP_AT_MOST {
            return;
        }
        let spare = Spare {
            buf: take(&mut self.buf),
            words: take(&mut self.words),
            redirects: take(&mut self.redirects),
            commands: take(&mut self.commands),
            plain: take(&mut self.plain),
            nested: take(&mut self.nested),
        };
        // During a thread's teardown there is nowhere to keep them: they are freed.
        let _ = SPARE.try_with(|slot| {
            if let Ok(mut slot) = slot.try_borrow_mut() {
                *slot = spare;
            }
        });
    }
}

/// Read a command line. Total: any input gives a [`Script`].
pub fn parse(src: &str) -> Script<'_> {
    let mut spare = SPARE
        .try_with(|slot| {
            slot.try_borrow_mut()
                .map(|mut slot| std::mem::take(&mut *slot))
                .unwrap_or_default()
        })
        .unwrap_or_default();
    spare.buf.clear();
    spare.words.clear();
    spare.redirects.clear();
    spare.commands.clear();
    spare.nested.clear();
    // About one word per 6 bytes and one command per 20 in real scripts: growing from there
    // costs a copy or two rather than a dozen.
    spare.words.reserve(src.len() / 6 + 4);
    spare.redirects.reserve(src.len() / 64 + 1);
    spare.commands.reserve(src.len() / 20 + 2);
    let mut script = Script {
        src,
        buf: spare.buf,
        words: spare.words,
        redirects: spare.redirects,
        commands: spare.commands,
        warnings: Vec::new(),
        plain: Vec::new(),
        nested: spare.nested,
    };
    if src.len() > MAX_LEN {
        script.warn(Warning::TooLong);
        return script;
    }
    let mut plain = spare.plain;
    plain_bits_into(src.as_bytes(), &mut plain);
    script.read(src, 0..src.len(), 0, None, false, &plain);
    script.plain = plain;
    script
}

/// One bit per byte of `bytes` (bit `i % 64` of word `i / 64`), set for the bytes that a word
/// reads as themselves ([`is_plain`]). Worked out once, without a branch per byte, so that
/// finding where a run of them ends is a bit count rather than a loop whose exit the processor
/// mispredicts at nearly every word.
fn plain_bits(bytes: &[u8]) -> Vec<u64> {
    let mut bits = Vec::new();
    plain_bits_into(bytes, &mut bits);
    bits
}

/// [`plain_bits`] into `bits`, replacing what it held.
fn plain_bits_into(bytes: &[u8], bits: &mut Vec<u64>) {
    bits.clear();
    bits.reserve(bytes.len() / 64 + 1);
    let (chunks, rest) = bytes.as_chunks::<64>();
    bits.extend(chunks.iter().map(plain_bits_64));
    if !rest.is_empty() {
        let mut last = [b' '; 64];
        last[..rest.len()].copy_from_slice(rest);
        bits.push(plain_bits_64(&last) & (u64::MAX >> (64 - rest.len())));
    }
}

/// [`plain_bits`] of 64 bytes. Each byte is compared with every special byte rather than
/// looked up in [`PLAIN`], which the compiler does 16 or 32 bytes at a time; the flags are then
/// gathered 8 at a time by one multiplication (byte `i`, 0 or 1, lands on bit `56 + i`; no two
/// partial products share a bit, so nothing carries into the top byte).
fn plain_bits_64(chunk: &[u8; 64]) -> u64 {
    let flags = chunk.map(|b| u8::from(!is_special(b)));
    flags
        .chunks_exact(8)
        .enumerate()
        .fold(0, |bits, (i, eight)| {
            let mut word = [0u8; 8];
            word.copy_from_slice(eight);
            let packed = u64::from_le_bytes(word).wrapping_mul(0x0102_0408_1020_4080) >> 56;
            bits | packed << (8 * i)
        })
}

/// Not [`is_plain`], written as comparisons the compiler can do for many bytes at once.
#[inline(always)]
fn is_special(b: u8) -> bool {
    ((b & 0xF9) == 0x20) // ' ' '"' '$' '&'
        | (b.wrapping_sub(b'\'') < 3) // '\'' '(' ')'
        | ((b & 0xDF) == b'\\') // '\\' '|'
        | ((b & 0xFD) == b'<') // '<' '>'
        | (b == b';')
        | (b.wrapping_sub(b'\t') < 2) // '\t' '\n'
        | (b == b'\r')
        | (b == b'`')
}

/// How many bytes from `from` on, before `limit`, are plain according to `plain` (see
/// [`plain_bits`]).
fn plain_run(plain: &[u64], from: usize, limit: usize) -> usize {
    let mut pos = from;
    while pos < limit {
        let Some(&bits) = plain.get(pos / 64) else {
            break;
        };
        let shift = pos % 64;
        // The run's length within this word: the trailing ones of the bits from `pos` on.
        let ones = (!(bits >> shift)).trailing_zeros() as usize;
        pos += ones.min(64 - shift);
        if ones < 64 - shift {
            break;
        }
    }
    pos.min(limit) - from.min(limit)
}

impl<'a> Script<'a> {
    /// The string a text is a range of: the input, or the buffer of unquoted text.
    fn backing(&self, text: Text) -> &str {
        if text.owned {
            &self.buf
        } else {
            self.src
        }
    }

    /// The text of a word, a name or an operator.
    pub fn text(&self, text: Text) -> &str {
        let range = text.start as usize..text.end as usize;
        self.backing(text).get(range).unwrap_or_default()
    }

    /// The bytes of a text: [`Script::text`] without checking that its ends are character
    /// boundaries (they always are), for the name tests, which read bytes only.
    pub(crate) fn text_bytes(&self, text: Text) -> &[u8] {
        let range = text.start as usize..text.end as usize;
        self.backing(text).as_bytes().get(range).unwrap_or_default()
    }

    /// A word's text after quote removal.
    pub fn word_text(&self, word: &Word) -> &str {
        self.text(word.text)
    }

    /// A redirection's operator (`>`, `2>>`, `&>`).
    pub fn redirect_op(&self, redirect: &Redirect) -> &str {
        self.text(redirect.op)
    }

    /// Every command, in reading order: a line's commands, then those of its substitutions.
    pub fn commands(&self) -> &[Command] {
        &self.commands
    }

    /// A command's words (the command name first).
    pub fn words(&self, command: &Command) -> &[Word] {
        self.words.get(command.word_range()).unwrap_or_default()
    }

    /// The words at `range` of the word list.
    pub(crate) fn word_slice(&self, range: Range<usize>) -> &[Word] {
        self.words.get(range).unwrap_or_default()
    }

    /// A command's redirections.
    pub fn redirects(&self, command: &Command) -> &[Redirect] {
        self.redirects_at(command.redirect_range())
    }

    pub(crate) fn redirects_at(&self, range: Range<usize>) -> &[Redirect] {
        self.redirects.get(range).unwrap_or_default()
    }

    /// The commands grouped into pipelines, with each word's text: for tests and tools.
    pub fn pipelines(&self) -> Vec<Vec<Vec<&str>>> {
        let mut out: Vec<Vec<Vec<&str>>> = Vec::new();
        for command in &self.commands {
            let words = self
                .words(command)
                .iter()
                .map(|w| self.word_text(w))
                .collect();
            match out.last_mut() {
                Some(pipeline) if !command.starts_pipeline => pipeline.push(words),
                _ => out.push(vec![words]),
            }
        }
        out
    }

    /// What prevented a complete reading, if anything (each kind once).
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    pub(crate) fn warn(&mut self, warning: Warning) {
        if !self.warnings.contains(&warning) {
            self.warnings.push(warning);
        }
    }

    /// Copy `text` to the end of the buffer as owned text (a lowercased name, say).
    pub(crate) fn push_owned(&mut self, text: &str) -> Text {
        let start = self.buf.len();
        self.buf.push_str(text);
        Text {
            start: to_u32(start),
            end: to_u32(self.buf.len()),
            owned: true,
        }
    }

    /// Read a payload (the text of an `sh -c` or `env -S` word) as commands of its own,
    /// appended to the script, at substitution/payload depth `depth`. A payload that quote
    /// removal left unchanged is a part of the input and its words keep their own spans;
    /// otherwise see [`Script::read_payload_copy`]. Returns the range of the new commands.
    pub(crate) fn read_payload(
        &mut self,
        text: Text,
        span: Range<usize>,
        depth: usize,
    ) -> Range<usize> {
        if text.owned {
            // The payload's text lives in the buffer this reading appends to: read a copy.
            let copy = self.text(text).to_string();
            return self.read_payload_copy(&copy, span, depth);
        }
        let first = self.commands.len();
        let src = self.src;
        let plain = std::mem::take(&mut self.plain);
        let range = text.start as usize..text.end as usize;
        self.read(src, range, depth, None, false, &plain);
        self.plain = plain;
        first..self.commands.len()
    }

    /// Read `text`, which is not a part of the input (a payload changed by quote removal, an
    /// `eval` line joined from words), as commands of its own; every span of its words is
    /// `span`, the payload's span in the input. Returns the range of the new commands.
    pub(crate) fn read_payload_copy(
        &mut self,
        text: &str,
        span: Range<usize>,
        depth: usize,
    ) -> Range<usize> {
        let first = self.commands.len();
        let pin = Some((to_u32(span.start), to_u32(span.end)));
        self.read(
            text,
            0..text.len(),
            depth,
            pin,
            true,
            &plain_bits(text.as_bytes()),
        );
        first..self.commands.len()
    }

    pub(crate) fn sort_warnings(&mut self) {
        self.warnings.sort_unstable();
    }

    /// Read `range` of `src` at substitution/payload depth `depth`. `copy` says `src` is not
    /// the script's input, so every word's text goes into the buffer. `plain` is
    /// [`plain_bits`] of `src`.
    fn read(
        &mut self,
        src: &str,
        range: Range<usize>,
        depth: usize,
        pin: Option<(u32, u32)>,
        copy: bool,
        plain: &[u64],
    ) {
        if depth > MAX_DEPTH {
            self.warn(Warning::TooDeep);
            return;
        }
        let Some(limited) = src.get(..range.end) else {
            return;
        };
        let nested_from = self.nested.len();
        let mut reader = Reader {
            src: limited,
            bytes: limited.as_bytes(),
            plain,
            pos: range.start,
            depth,
            pin,
            copy,
            words_from: self.words.len(),
            redirects_from: self.redirects.len(),
            starts_pipeline: true,
        };
        loop {
            reader.skip_blanks();
            let Some(c) = reader.peek() else { break };
            // Most tokens are words: test for one first, rather than through the jump table
            // below, whose target the processor mispredicts more often.
            if is_plain(c) && c != b'#' && !c.is_ascii_digit() {
                if let Some(word) = reader.word(self) {
                    self.words.push(word);
                }
                continue;
            }
            match c {
                b'#' => reader.skip_comment(),
                b';' | b'\n' | b'(' | b')' => {
                    reader.pos += 1;
                    reader.finish_pipeline(self);
                }
                b'&' if reader.peek_at(1) == Some(b'>') => reader.redirect(self),
                b'&' => {
                    reader.pos += if reader.peek_at(1) == Some(b'&') {
                        2
                    } else {
                        1
                    };
                    reader.finish_pipeline(self);
                }
                b'|' if reader.peek_at(1) == Some(b'|') => {
                    reader.pos += 2;
                    reader.finish_pipeline(self);
                }
                b'|' => {
                    reader.pos += if reader.peek_at(1) == Some(b'&') {
                        2
                    } else {
                        1
                    };
                    reader.finish_command(self);
                }
                // A word; `<(...)` and `>(...)` are process substitutions, whose commands run too.
                b'<' | b'>' if reader.peek_at(1) != Some(b'(') => reader.redirect(self),
                b'0'..=b'9' if reader.is_fd_redirect() => reader.redirect(self),
                _ => {
                    if let Some(word) = reader.word(self) {
                        self.words.push(word);
                    }
                }
            }
        }
        reader.finish_pipeline(self);
        // Substitutions are read after the line that holds them, each as its own command list
        // (their readings append their own substitutions after these, and remove them).
        let found = self.nested.len();
        for i in nested_from..found {
            let Some(inner) = self.nested.get(i).cloned() else {
                break;
            };
            self.read(src, inner, depth + 1, pin, copy, plain);
        }
        self.nested.truncate(nested_from);
    }
}

/// An offset as stored: inputs longer than [`MAX_LEN`] are never read, so this never clamps.
pub(crate) fn to_u32(offset: usize) -> u32 {
    u32::try_from(offset).unwrap_or(u32::MAX)
}

struct Reader<'s> {
    src: &'s str,
    bytes: &'s [u8],
    /// [`plain_bits`] of the whole source (`bytes` may end before it does).
    plain: &'s [u64],
    pos: usize,
    depth: usize,
    pin: Option<(u32, u32)>,
    copy: bool,
    /// Where the command being read starts in the script's word and redirection lists.
    words_from: usize,
    redirects_from: usize,
    starts_pipeline: bool,
}

fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t' || c == b'\r'
}

fn ends_word(c: u8) -> bool {
    is_blank(c) || matches!(c, b'\n' | b';' | b'&' | b'|' | b'<' | b'>' | b'(' | b')')
}

/// Bytes that a word reads as themselves: not a word end, quote, escape or expansion.
fn is_plain(c: u8) -> bool {
    PLAIN[usize::from(c)]
}

/// [`is_plain`] as a table: one load per byte in the reader's hottest loop.
const PLAIN: [bool; 256] = {
    let mut table = [true; 256];
    let special = b" \t\r\n;&|<>()'\"\\`$";
    let mut i = 0;
    while i < special.len() {
        table[special[i] as usize] = false;
        i += 1;
    }
    table
};

/// Bytes that end a run of literal text inside double quotes.
fn ends_double_quoted_run(c: u8) -> bool {
    matches!(c, b'"' | b'\\' | b'`' | b'$')
}

/// How many bytes from `from` on satisfy `keep` (all of them when none fails).
fn run_length(bytes: &[u8], from: usize, keep: impl Fn(u8) -> bool) -> usize {
    bytes.get(from..).map_or(0, |rest| {
        rest.iter().position(|&b| !keep(b)).unwrap_or(rest.len())
    })
}

impl<'s> Reader<'s> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.pos + ahead).copied()
    }

    /// `src[from..to]`, or nothing if that is not a range of it (it always is).
    fn slice(&self, from: usize, to: usize) -> &'s str {
        self.src.get(from..to).unwrap_or_default()
    }

    fn finish_command(&mut self, script: &mut Script<'_>) {
        let (words, redirects) = (script.words.len(), script.redirects.len());
        if words > self.words_from || redirects > self.redirects_from {
            script.commands.push(Command {
                words: (to_u32(self.words_from), to_u32(words)),
                redirects: (to_u32(self.redirects_from), to_u32(redirects)),
                starts_pipeline: self.starts_pipeline,
                depth: u8::try_from(self.depth).unwrap_or(u8::MAX),
            });
            self.starts_pipeline = false;
        }
        self.words_from = words;
        self.redirects_from = redirects;
    }

    fn finish_pipeline(&mut self, script: &mut Script<'_>) {
        self.finish_command(script);
        self.starts_pipeline = true;
    }

    fn span(&self, start: usize, end: usize) -> (u32, u32) {
        self.pin.unwrap_or((to_u32(start), to_u32(end)))
    }

    fn skip_blanks(&mut self) {
        while let Some(c) = self.peek() {
            if is_blank(c) {
                self.pos += 1;
            } else if c == b'\\' && self.peek_at(1) == Some(b'\n') {
                self.pos += 2;
            } else {
                break;
            }
        }
    }

    fn skip_comment(&mut self) {
        self.pos += run_length(self.bytes, self.pos, |c| c != b'\n');
    }

    /// `2>`, `1>>`, `0<`: a digit run directly followed by a redirection operator.
    fn is_fd_redirect(&self) -> bool {
        let digits = run_length(self.bytes, self.pos, |c| c.is_ascii_digit());
        matches!(self.bytes.get(self.pos + digits), Some(b'<' | b'>'))
    }

    fn redirect(&mut self, script: &mut Script<'_>) {
        let start = self.pos;
        self.pos += run_length(self.bytes, self.pos, |c| c.is_ascii_digit());
        // `>&2`: the digit is the target, read below as a word.
        self.pos += run_length(self.bytes, self.pos, |c| {
            matches!(c, b'<' | b'>' | b'&' | b'|')
        });
        let op = self.text_of(script, start, self.pos);
        self.skip_blanks();
        if let Some(target) = self.word(script) {
            script.redirects.push(Redirect { op, target });
        }
    }

    /// `src[start..end]` as a [`Text`]: a range of the input, or a copy when reading a copy.
    fn text_of(&self, script: &mut Script<'_>, start: usize, end: usize) -> Text {
        if self.copy {
            script.push_owned(self.slice(start, end))
        } else {
            Text {
                start: to_u32(start),
                end: to_u32(end),
                owned: false,
            }
        }
    }

    /// Text of the char starting at `pos` (the input is UTF-8; never split a char).
    fn char_at(&self, pos: usize) -> (char, usize) {
        match self.src.get(pos..).and_then(|rest| rest.chars().next()) {
            Some(c) => (c, c.len_utf8()),
            None => ('\0', 1),
        }
    }

    /// Read one word with quote removal, registering the substitutions inside it. The text
    /// stays a range of the input until quote removal first changes it; from then on it is
    /// built at the end of the script's buffer (`owned` says where it starts there). Inlined
    /// into its two callers: returning a word through memory and reading it back at once costs
    /// a stalled load per word.
    #[inline(always)]
    fn word(&mut self, script: &mut Script<'_>) -> Option<Word> {
        let start = self.pos;
        let mut owned: Option<usize> = None;
        while let Some(c) = self.peek() {
            match c {
                _ if is_plain(c) => {
                    // A run of plain bytes (all special bytes are ASCII: no char is split).
                    let from = self.pos;
                    self.pos += plain_run(self.plain, from, self.bytes.len());
                    if owned.is_some() {
                        script.buf.push_str(self.slice(from, self.pos));
                    }
                    // Most runs end the word at a space or the end of the text: tested here,
                    // that costs no jump through the table below.
                    if matches!(self.peek(), None | Some(b' ')) {
                        break;
                    }
                }
                _ if ends_word(c) && !(c == b'<' || c == b'>') => break,
                b'<' | b'>' if self.peek_at(1) == Some(b'(') => {
                    self.own(script, &mut owned, start);
                    self.pos += 1;
                    self.dollar_paren(script);
                }
                b'<' | b'>' => break,
                b'\'' => {
                    self.own(script, &mut owned, start);
                    self.pos += 1;
                    let from = self.pos;
                    let len = run_length(self.bytes, from, |b| b != b'\'');
                    script.buf.push_str(self.slice(from, from + len));
                    if from + len < self.bytes.len() {
                        self.pos = from + len + 1;
                    } else {
                        self.pos = self.bytes.len();
                        script.warn(Warning::Unterminated);
                    }
                }
                b'"' => {
                    self.own(script, &mut owned, start);
                    self.pos += 1;
                    self.double_quoted(script);
                }
                b'\\' => {
                    self.own(script, &mut owned, start);
                    self.pos += 1;
                    if self.pos < self.bytes.len() {
                        let (ch, len) = self.char_at(self.pos);
                        if ch != '\n' {
                            script.buf.push(ch);
                        }
                        self.pos += len;
                    }
                }
                b'`' => {
                    self.own(script, &mut owned, start);
                    self.backtick(script);
                }
                _ if !matches!(self.peek_at(1), Some(b'(' | b'{' | b'\'')) => {
                    // A `$` that starts no substitution reads as itself (`$HOME` stays `$HOME`).
                    self.pos += 1;
                    if owned.is_some() {
                        script.buf.push('$');
                    }
                }
                _ => {
                    // `$(...)`, `${...}` are kept as written; `$'...'` is decoded.
                    self.own(script, &mut owned, start);
                    self.dollar(script);
                }
            }
        }
        if self.pos == start {
            // An operator character we do not treat specially: consume it so reading advances.
            let (_, len) = self.char_at(self.pos);
            self.pos += len;
            return None;
        }
        let (text, first) = match owned {
            Some(from) => (
                Text {
                    start: to_u32(from),
                    end: to_u32(script.buf.len()),
                    owned: true,
                },
                script.buf.as_bytes().get(from).copied(),
            ),
            None => (
                self.text_of(script, start, self.pos),
                self.bytes.get(start).copied(),
            ),
        };
        let (span_start, span_end) = self.span(start, self.pos);
        Some(Word {
            text,
            start: span_start,
            end: span_end,
            dashed: first == Some(b'-'),
        })
    }

    /// Switch a word to owned text holding what was read so far (all of it plain).
    fn own(&self, script: &mut Script<'_>, owned: &mut Option<usize>, start: usize) {
        if owned.is_none() {
            if script.buf.is_empty() {
                // Room for the unquoted text of the rest of the input, once, rather than
                // growing word by word (nothing when a kept buffer has that room already).
                script
                    .buf
                    .reserve(self.bytes.len().saturating_sub(start) + 16);
            }
            *owned = Some(script.buf.len());
            script.buf.push_str(self.slice(start, self.pos));
        }
    }

    fn double_quoted(&mut self, script: &mut Script<'_>) {
        while let Some(c) = self.peek() {
            match c {
                b'"' => {
                    self.pos += 1;
                    return;
                }
                b'\\' => match self.peek_at(1) {
                    Some(next @ (b'"' | b'\\' | b'$' | b'`')) => {
                        script.buf.push(char::from(next));
                        self.pos += 2;
                    }
                    Some(b'\n') => self.pos += 2,
                    _ => {
                        script.buf.push('\\');
                        self.pos += 1;
                    }
                },
                b'`' => self.backtick(script),
                b'$' => self.dollar(script),
                _ => {
                    // A run of literal text (the bytes that end it are ASCII: no char is split).
                    let from = self.pos;
                    self.pos += run_length(self.bytes, from, |b| !ends_double_quoted_run(b));
                    script.buf.push_str(self.slice(from, self.pos));
                }
            }
        }
        script.warn(Warning::Unterminated);
    }

    /// `$`-forms: `$(...)`, `$((...))`, `${...}`, `$'...'`, `$NAME`.
    fn dollar(&mut self, script: &mut Script<'_>) {
        match self.peek_at(1) {
            Some(b'(') => {
                self.pos += 1;
                self.dollar_paren(script);
            }
            Some(b'{') => {
                let start = self.pos;
                let len = run_length(self.bytes, start, |b| b != b'}');
                if start + len < self.bytes.len() {
                    self.pos = start + len + 1;
                } else {
                    self.pos = self.bytes.len();
                    script.warn(Warning::Unterminated);
                }
                script.buf.push_str(self.slice(start, self.pos));
            }
            Some(b'\'') => {
                self.pos += 2;
                self.ansi_c(script);
            }
            _ => {
                script.buf.push('$');
                self.pos += 1;
            }
        }
    }

    /// At `(` of `$(`, `<(` or `>(`: find the matching `)` and queue the inside for reading.
    fn dollar_paren(&mut self, script: &mut Script<'_>) {
        let open = self.pos; // the '('
        let mut depth = 0usize;
        let mut i = open;
        let mut quote: Option<u8> = None;
        while i < self.bytes.len() {
            let c = self.bytes[i];
            match quote {
                Some(q) => {
                    if c == b'\\' && q == b'"' {
                        i += 1;
                    } else if c == q {
                        quote = None;
                    }
                }
                None => match c {
                    b'\\' => i += 1,
                    b'\'' | b'"' => quote = Some(c),
                    b'(' => depth += 1,
                    b')' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                },
            }
            i += 1;
        }
        let inner_start = open + 1;
        let (inner_end, after) = if i < self.bytes.len() {
            (i, i + 1)
        } else {
            script.warn(Warning::Unterminated);
            (self.bytes.len(), self.bytes.len())
        };
        let inner_end = inner_end.max(inner_start);
        // `$((1+2))` is arithmetic, not a command.
        let inner = self.slice(inner_start, inner_end);
        if !(inner.starts_with('(') && inner.ends_with(')')) {
            script.nested.push(inner_start..inner_end);
        }
        script
            .buf
            .push_str(self.slice(open.saturating_sub(1), after));
        self.pos = after;
        if self.depth >= MAX_DEPTH {
            script.warn(Warning::TooDeep);
        }
    }

    fn backtick(&mut self, script: &mut Script<'_>) {
        let open = self.pos;
        let inner_start = open + 1;
        let mut i = inner_start;
        while i < self.bytes.len() && self.bytes[i] != b'`' {
            if self.bytes[i] == b'\\' {
                i += 1;
            }
            i += 1;
        }
        let inner_end = i.min(self.bytes.len());
        if i >= self.bytes.len() {
            script.warn(Warning::Unterminated);
        }
        script.nested.push(inner_start..inner_end);
        self.pos = (i + 1).min(self.bytes.len());
        script.buf.push_str(self.slice(open, self.pos));
    }

    /// `$'...'` with C escapes (`\x72` is `r`).
    fn ansi_c(&mut self, script: &mut Script<'_>) {
        let text = &mut script.buf;
        while let Some(c) = self.peek() {
            match c {
                b'\'' => {
                    self.pos += 1;
                    return;
                }
                b'\\' => {
                    self.pos += 1;
                    let Some(e) = self.peek() else { break };
                    if !e.is_ascii() {
                        // `\` before a multi-byte character: the character itself.
                        let (ch, len) = self.char_at(self.pos);
                        text.push(ch);
                        self.pos += len;
                        continue;
                    }
                    self.pos += 1;
                    match e {
                        b'n' => text.push('\n'),
                        b't' => text.push('\t'),
                        b'r' => text.push('\r'),
                        b'a' => text.push('\u{7}'),
                        b'b' => text.push('\u{8}'),
                        b'e' | b'E' => text.push('\u{1b}'),
                        b'x' => push_code(text, self.take_digits(2, 16)),
                        b'u' => push_code(text, self.take_digits(4, 16)),
                        b'U' => push_code(text, self.take_digits(8, 16)),
                        b'0'..=b'7' => {
                            self.pos -= 1;
                            push_code(text, self.take_digits(3, 8));
                        }
                        other => text.push(char::from(other)),
                    }
                }
                _ => {
                    let (ch, len) = self.char_at(self.pos);
                    text.push(ch);
                    self.pos += len;
                }
            }
        }
        script.warn(Warning::Unterminated);
    }

    /// Up to `max` digits of `radix`, as their value (`None` when there are none).
    fn take_digits(&mut self, max: usize, radix: u32) -> Option<u32> {
        let mut value: Option<u32> = None;
        for _ in 0..max {
            let Some(digit) = self.peek().and_then(|c| char::from(c).to_digit(radix)) else {
                break;
            };
            value = Some(
                value
                    .unwrap_or(0)
                    .saturating_mul(radix)
                    .saturating_add(digit),
            );
            self.pos += 1;
        }
        value
    }
}

fn push_code(text: &mut String, code: Option<u32>) {
    if let Some(ch) = code.and_then(char::from_u32) {
        text.push(ch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(src: &str) -> Vec<Vec<Vec<String>>> {
        parse(src)
            .pipelines()
            .into_iter()
            .map(|p| {
                p.into_iter()
                    .map(|c| c.into_iter().map(str::to_string).collect())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn quoting_is_removed() {
        assert_eq!(
            words(r#"r''m -rf "/tmp/a b" \/x $'\x72m'"#),
            vec![vec![vec!["rm", "-rf", "/tmp/a b", "/x", "rm"]]]
        );
    }

    #[test]
    fn separators_and_pipes() {
        let w = words("a 1; b && c || d | e & f\ng");
        assert_eq!(w.len(), 6);
        assert_eq!(w[3], vec![vec!["d"], vec!["e"]]);
    }

    #[test]
    fn substitutions_become_commands() {
        let w = words("echo $(rm -rf /) `reboot` \"$(shutdown now)\"");
        let names: Vec<&str> = w.iter().map(|p| p[0][0].as_str()).collect();
        assert_eq!(names, ["echo", "rm", "reboot", "shutdown"]);
        // Spans point into the original text.
        let src = "echo $(rm -rf /)";
        let s = parse(src);
        let rm = s.words(&s.commands()[1])[0];
        assert_eq!(&src[rm.span()], "rm");
    }

    #[test]
    fn redirections_are_kept_apart_from_words() {
        let script = parse("echo x > /dev/sda 2>&1");
        let cmd = &script.commands()[0];
        assert_eq!(script.words(cmd).len(), 2);
        let redirect = &script.redirects(cmd)[0];
        assert_eq!(script.word_text(&redirect.target), "/dev/sda");
        assert_eq!(script.redirect_op(redirect), ">");
    }

    #[test]
    fn unterminated_text_is_reported_not_fatal() {
        let script = parse("rm -rf '/tmp");
        assert_eq!(script.warnings(), [Warning::Unterminated]);
        assert_eq!(words("rm -rf '/tmp")[0][0][2], "/tmp");
    }

    #[test]
    fn deep_nesting_is_reported() {
        let mut src = String::from("x");
        for _ in 0..20 {
            src = format!("echo $({src})");
        }
        assert!(parse(&src).warnings().contains(&Warning::TooDeep));
    }

    #[test]
    fn arithmetic_and_comments_are_not_commands() {
        assert_eq!(
            words("echo $((1+2)) # rm -rf /"),
            vec![vec![vec!["echo", "$((1+2))"]]]
        );
    }

    #[test]
    fn multibyte_text_is_safe() {
        assert_eq!(words("echo 'é' \"ü\" ß $'\\u00e9' \\ä")[0][0][1], "é");
        assert_eq!(
            words("echo $'\\u00e9\\x41\\101'")[0][0][1],
            "\u{e9}AA",
            "hex, unicode and octal escapes"
        );
    }

    #[test]
    fn plain_runs_end_where_a_byte_loop_would_end_them() {
        let text = format!("{}x'y z{}\"w$v", "a".repeat(70), "b".repeat(130));
        let bytes = text.as_bytes();
        let plain = plain_bits(bytes);
        for from in 0..=bytes.len() {
            for limit in [from, from + 1, from + 63, from + 64, from + 65, bytes.len()] {
                let limit = limit.min(bytes.len());
                let expected = run_length(&bytes[..limit], from, is_plain);
                assert_eq!(plain_run(&plain, from, limit), expected, "{from}..{limit}");
            }
        }
    }

    #[test]
    fn plain_bits_agree_with_the_table_for_every_byte_at_every_offset() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(256 * 3 + 37).collect();
        for len in [0, 1, 63, 64, 65, 127, 128, 300, bytes.len()] {
            for start in [0, 1, 7, 64] {
                let part = &bytes[start.min(len)..len];
                let expected: Vec<u64> = part
                    .chunks(64)
                    .map(|chunk| {
                        chunk
                            .iter()
                            .enumerate()
                            .fold(0u64, |bits, (i, &b)| bits | u64::from(is_plain(b)) << i)
                    })
                    .collect();
                assert_eq!(plain_bits(part), expected, "{start}..{len}");
            }
        }
        for b in 0..=255u8 {
            assert_eq!(is_special(b), !is_plain(b), "byte {b}");
        }
    }

    #[test]
    fn words_of_changed_text_share_one_buffer() {
        let script = parse("a 'b' \"c\" d");
        let texts: Vec<&str> = script
            .words(&script.commands()[0])
            .iter()
            .map(|w| script.word_text(w))
            .collect();
        assert_eq!(texts, ["a", "b", "c", "d"]);
        assert_eq!(script.buf, "bc");
    }

    #[test]
    fn dashed_says_whether_the_unquoted_text_starts_with_a_dash() {
        let script = parse(r#"rm -rf '-x' \-y ""-z x-y '' - -- a$(ls -l) `echo -n`"#);
        let mut seen = 0;
        for command in script.commands() {
            for word in script.words(command) {
                assert_eq!(
                    word.dashed,
                    script.word_text(word).starts_with('-'),
                    "{:?}",
                    script.word_text(word)
                );
                seen += usize::from(word.dashed);
            }
        }
        assert_eq!(seen, 8);
    }
}
