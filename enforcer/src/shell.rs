//! A small, total shell reader: it splits a command line into pipelines of simple commands,
//! removes quoting the way a POSIX shell would (`r''m`, `\rm`, `"rm"` and `$'\x72m'` are all
//! `rm`), and follows command substitutions (`$(...)`, backticks, `<(...)`) into their own
//! commands. It never fails: unbalanced quotes or substitutions end at the end of the input and
//! are reported in [`Script::warnings`] so the caller can treat the text as suspicious.
//!
//! Every word keeps the byte span of its raw text in the original string, so a match can be
//! highlighted exactly where a person will read it. A word without quoting or escapes borrows
//! its text from the input; only words that quote removal changes own a copy.

use std::borrow::Cow;
use std::ops::Range;

/// How deep substitutions and `sh -c` payloads are followed before giving up.
pub const MAX_DEPTH: usize = 8;

/// One word after quote removal, with the span of its raw text in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word<'a> {
    pub text: Cow<'a, str>,
    pub span: Range<usize>,
}

impl Word<'_> {
    /// The same word, owning its text.
    pub fn into_owned(self) -> Word<'static> {
        Word {
            text: Cow::Owned(self.text.into_owned()),
            span: self.span,
        }
    }
}

/// A redirection such as `> /dev/sda` (operator and target word).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect<'a> {
    pub op: Cow<'a, str>,
    pub target: Word<'a>,
}

impl Redirect<'_> {
    /// The same redirection, owning its text.
    pub fn into_owned(self) -> Redirect<'static> {
        Redirect {
            op: Cow::Owned(self.op.into_owned()),
            target: self.target.into_owned(),
        }
    }
}

/// A command with its words, before wrappers such as `sudo` are looked through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimpleCommand<'a> {
    pub words: Vec<Word<'a>>,
    pub redirects: Vec<Redirect<'a>>,
}

/// Commands joined by `|` or `|&`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pipeline<'a> {
    pub commands: Vec<SimpleCommand<'a>>,
}

/// Something about the text that prevented a complete reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Warning {
    /// A quote, `$(`, `${` or backtick was never closed.
    Unterminated,
    /// Substitutions or `sh -c` payloads nest deeper than [`MAX_DEPTH`].
    TooDeep,
}

/// Everything read from one command line, substitutions included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Script<'a> {
    pub pipelines: Vec<Pipeline<'a>>,
    pub warnings: Vec<Warning>,
}

impl Script<'_> {
    /// The same script, owning all its text.
    pub fn into_owned(self) -> Script<'static> {
        Script {
            pipelines: self
                .pipelines
                .into_iter()
                .map(|p| Pipeline {
                    commands: p
                        .commands
                        .into_iter()
                        .map(|c| SimpleCommand {
                            words: c.words.into_iter().map(Word::into_owned).collect(),
                            redirects: c.redirects.into_iter().map(Redirect::into_owned).collect(),
                        })
                        .collect(),
                })
                .collect(),
            warnings: self.warnings,
        }
    }

    fn warn(&mut self, warning: Warning) {
        if !self.warnings.contains(&warning) {
            self.warnings.push(warning);
        }
    }
}

/// Read a command line. Total: any input gives a [`Script`].
pub fn parse(src: &str) -> Script<'_> {
    let mut script = Script::default();
    parse_into(src, 0, 0, None, &mut script);
    script
}

/// Read `src` (found at byte `base` of the original input) into `script`. When `pin` is set,
/// every span is replaced by it: the text was unquoted first (an `sh -c` payload), so its own
/// offsets do not map back to the original input.
pub(crate) fn parse_into<'a>(
    src: &'a str,
    base: usize,
    depth: usize,
    pin: Option<Range<usize>>,
    script: &mut Script<'a>,
) {
    if depth > MAX_DEPTH {
        script.warn(Warning::TooDeep);
        return;
    }
    let mut reader = Reader {
        src,
        bytes: src.as_bytes(),
        pos: 0,
        base,
        depth,
        pin,
        nested: Vec::new(),
    };
    // This level's pipelines go straight into the script; substitutions follow them.
    if script.pipelines.capacity() == 0 {
        script.pipelines.reserve(src.len() / 64 + 1);
    }
    let mut pipeline = Pipeline::default();
    let mut command = SimpleCommand::default();
    loop {
        reader.skip_blanks();
        let Some(c) = reader.peek() else { break };
        match c {
            b'#' => reader.skip_comment(),
            b';' | b'\n' | b'(' | b')' => {
                reader.pos += 1;
                finish_pipeline(&mut script.pipelines, &mut pipeline, &mut command);
            }
            b'&' if reader.peek_at(1) == Some(b'>') => reader.redirect(&mut command, script),
            b'&' => {
                reader.pos += if reader.peek_at(1) == Some(b'&') {
                    2
                } else {
                    1
                };
                finish_pipeline(&mut script.pipelines, &mut pipeline, &mut command);
            }
            b'|' if reader.peek_at(1) == Some(b'|') => {
                reader.pos += 2;
                finish_pipeline(&mut script.pipelines, &mut pipeline, &mut command);
            }
            b'|' => {
                reader.pos += if reader.peek_at(1) == Some(b'&') {
                    2
                } else {
                    1
                };
                finish_command(&mut pipeline, &mut command);
            }
            b'<' | b'>' if reader.peek_at(1) == Some(b'(') => {
                // Process substitution: its commands run too.
                if let Some(word) = reader.word(script) {
                    command.push(word);
                }
            }
            b'<' | b'>' => reader.redirect(&mut command, script),
            b'0'..=b'9' if reader.is_fd_redirect() => reader.redirect(&mut command, script),
            _ => {
                if let Some(word) = reader.word(script) {
                    command.push(word);
                }
            }
        }
    }
    finish_pipeline(&mut script.pipelines, &mut pipeline, &mut command);
    // Substitutions are read after the line that holds them, each as its own command list.
    let nested = std::mem::take(&mut reader.nested);
    for (inner, inner_base) in nested {
        parse_into(
            &src[inner.clone()],
            inner_base,
            depth + 1,
            reader.pin.clone(),
            script,
        );
    }
}

impl<'a> SimpleCommand<'a> {
    fn push(&mut self, word: Word<'a>) {
        // Most commands have a handful of words: one allocation instead of growing 1, 4, 8.
        if self.words.capacity() == 0 {
            self.words.reserve(8);
        }
        self.words.push(word);
    }
}

fn finish_command<'a>(pipeline: &mut Pipeline<'a>, command: &mut SimpleCommand<'a>) {
    let done = std::mem::take(command);
    if !done.words.is_empty() || !done.redirects.is_empty() {
        pipeline.commands.push(done);
    }
}

fn finish_pipeline<'a>(
    pipelines: &mut Vec<Pipeline<'a>>,
    pipeline: &mut Pipeline<'a>,
    command: &mut SimpleCommand<'a>,
) {
    finish_command(pipeline, command);
    let done = std::mem::take(pipeline);
    if !done.commands.is_empty() {
        pipelines.push(done);
    }
}

struct Reader<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    base: usize,
    depth: usize,
    pin: Option<Range<usize>>,
    /// Substitutions found while reading: (range in `src`, offset of that range in the input).
    nested: Vec<(Range<usize>, usize)>,
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

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.pos + ahead).copied()
    }

    fn span(&self, start: usize, end: usize) -> Range<usize> {
        match &self.pin {
            Some(pinned) => pinned.clone(),
            None => self.base + start..self.base + end,
        }
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
        while let Some(c) = self.peek() {
            if c == b'\n' {
                break;
            }
            self.pos += 1;
        }
    }

    /// `2>`, `1>>`, `0<`: a digit run directly followed by a redirection operator.
    fn is_fd_redirect(&self) -> bool {
        let mut i = self.pos;
        while i < self.bytes.len() && self.bytes[i].is_ascii_digit() {
            i += 1;
        }
        matches!(self.bytes.get(i), Some(b'<' | b'>'))
    }

    fn redirect(&mut self, command: &mut SimpleCommand<'a>, script: &mut Script<'a>) {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        while self
            .peek()
            .is_some_and(|c| matches!(c, b'<' | b'>' | b'&' | b'|'))
        {
            self.pos += 1;
            // `>&2`: the digit is the target, read below as a word.
        }
        let op = Cow::Borrowed(&self.src[start..self.pos]);
        self.skip_blanks();
        if let Some(target) = self.word(script) {
            command.redirects.push(Redirect { op, target });
        }
    }

    /// Text of the char starting at `pos` (the input is UTF-8; never split a char).
    fn char_at(&self, pos: usize) -> (char, usize) {
        match self.src[pos..].chars().next() {
            Some(c) => (c, c.len_utf8()),
            None => ('\0', 1),
        }
    }

    /// Read one word with quote removal, registering the substitutions inside it. The text
    /// stays borrowed from the input until quote removal first changes it.
    fn word(&mut self, script: &mut Script<'a>) -> Option<Word<'a>> {
        let start = self.pos;
        let mut owned: Option<String> = None;
        while let Some(c) = self.peek() {
            match c {
                _ if is_plain(c) => {
                    // A run of plain bytes (all special bytes are ASCII: no char is split).
                    let from = self.pos;
                    self.pos += run_length(self.bytes, from, is_plain);
                    if let Some(text) = owned.as_mut() {
                        text.push_str(&self.src[from..self.pos]);
                    }
                }
                _ if ends_word(c) && !(c == b'<' || c == b'>') => break,
                b'<' | b'>' if self.peek_at(1) == Some(b'(') => {
                    let text = self.own(&mut owned, start);
                    self.pos += 1;
                    self.dollar_paren(text, script);
                }
                b'<' | b'>' => break,
                b'\'' => {
                    let text = self.own(&mut owned, start);
                    self.pos += 1;
                    let from = self.pos;
                    match self.src[from..].find('\'') {
                        Some(len) => {
                            text.push_str(&self.src[from..from + len]);
                            self.pos = from + len + 1;
                        }
                        None => {
                            text.push_str(&self.src[from..]);
                            self.pos = self.bytes.len();
                            script.warn(Warning::Unterminated);
                        }
                    }
                }
                b'"' => {
                    let text = self.own(&mut owned, start);
                    self.pos += 1;
                    self.double_quoted(text, script);
                }
                b'\\' => {
                    let text = self.own(&mut owned, start);
                    self.pos += 1;
                    if self.pos < self.bytes.len() {
                        let (ch, len) = self.char_at(self.pos);
                        if ch != '\n' {
                            text.push(ch);
                        }
                        self.pos += len;
                    }
                }
                b'`' => {
                    let text = self.own(&mut owned, start);
                    self.backtick(text, script);
                }
                _ if !matches!(self.peek_at(1), Some(b'(' | b'{' | b'\'')) => {
                    // A `$` that starts no substitution reads as itself (`$HOME` stays `$HOME`).
                    self.pos += 1;
                    if let Some(text) = owned.as_mut() {
                        text.push('$');
                    }
                }
                _ => {
                    // `$(...)`, `${...}` are kept as written; `$'...'` is decoded.
                    let text = self.own(&mut owned, start);
                    self.dollar(text, script);
                }
            }
        }
        if self.pos == start {
            // An operator character we do not treat specially: consume it so reading advances.
            let (_, len) = self.char_at(self.pos);
            self.pos += len;
            return None;
        }
        let text = match owned {
            Some(text) => Cow::Owned(text),
            None => Cow::Borrowed(&self.src[start..self.pos]),
        };
        Some(Word {
            text,
            span: self.span(start, self.pos),
        })
    }

    /// Switch a word to an owned text holding what was read so far (all of it plain).
    fn own<'b>(&self, owned: &'b mut Option<String>, start: usize) -> &'b mut String {
        owned.get_or_insert_with(|| {
            let mut text = String::with_capacity(self.pos - start + 16);
            text.push_str(&self.src[start..self.pos]);
            text
        })
    }

    fn double_quoted(&mut self, text: &mut String, script: &mut Script<'a>) {
        while let Some(c) = self.peek() {
            match c {
                b'"' => {
                    self.pos += 1;
                    return;
                }
                b'\\' => match self.peek_at(1) {
                    Some(next @ (b'"' | b'\\' | b'$' | b'`')) => {
                        text.push(next as char);
                        self.pos += 2;
                    }
                    Some(b'\n') => self.pos += 2,
                    _ => {
                        text.push('\\');
                        self.pos += 1;
                    }
                },
                b'`' => self.backtick(text, script),
                b'$' => self.dollar(text, script),
                _ => {
                    // A run of literal text (the bytes that end it are ASCII: no char is split).
                    let from = self.pos;
                    self.pos += run_length(self.bytes, from, |b| !ends_double_quoted_run(b));
                    text.push_str(&self.src[from..self.pos]);
                }
            }
        }
        script.warn(Warning::Unterminated);
    }

    /// `$`-forms: `$(...)`, `$((...))`, `${...}`, `$'...'`, `$NAME`.
    fn dollar(&mut self, text: &mut String, script: &mut Script<'a>) {
        match self.peek_at(1) {
            Some(b'(') => {
                self.pos += 1;
                self.dollar_paren(text, script);
            }
            Some(b'{') => {
                let start = self.pos;
                match self.src[self.pos..].find('}') {
                    Some(len) => self.pos += len + 1,
                    None => {
                        self.pos = self.bytes.len();
                        script.warn(Warning::Unterminated);
                    }
                }
                text.push_str(&self.src[start..self.pos]);
            }
            Some(b'\'') => {
                self.pos += 2;
                self.ansi_c(text, script);
            }
            _ => {
                text.push('$');
                self.pos += 1;
            }
        }
    }

    /// At `(` of `$(`, `<(` or `>(`: find the matching `)` and queue the inside for reading.
    fn dollar_paren(&mut self, text: &mut String, script: &mut Script<'a>) {
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
                        depth -= 1;
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
        let inner = &self.src[inner_start..inner_end];
        if !(inner.starts_with('(') && inner.ends_with(')')) {
            self.nested
                .push((inner_start..inner_end, self.base + inner_start));
        }
        text.push_str(&self.src[open.saturating_sub(1)..after]);
        self.pos = after;
        if self.depth >= MAX_DEPTH {
            script.warn(Warning::TooDeep);
        }
    }

    fn backtick(&mut self, text: &mut String, script: &mut Script<'a>) {
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
        self.nested
            .push((inner_start..inner_end, self.base + inner_start));
        self.pos = (i + 1).min(self.bytes.len());
        text.push_str(&self.src[open..self.pos]);
    }

    /// `$'...'` with C escapes (`\x72` is `r`).
    fn ansi_c(&mut self, text: &mut String, script: &mut Script<'a>) {
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
                        b'x' => {
                            let digits = self.take_digits(2, 16);
                            push_code(text, &digits, 16);
                        }
                        b'u' => {
                            let digits = self.take_digits(4, 16);
                            push_code(text, &digits, 16);
                        }
                        b'U' => {
                            let digits = self.take_digits(8, 16);
                            push_code(text, &digits, 16);
                        }
                        b'0'..=b'7' => {
                            self.pos -= 1;
                            let digits = self.take_digits(3, 8);
                            push_code(text, &digits, 8);
                        }
                        other => text.push(other as char),
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

    fn take_digits(&mut self, max: usize, radix: u32) -> String {
        let mut digits = String::new();
        while digits.len() < max {
            match self.peek() {
                Some(c) if (c as char).is_digit(radix) => {
                    digits.push(c as char);
                    self.pos += 1;
                }
                _ => break,
            }
        }
        digits
    }
}

fn push_code(text: &mut String, digits: &str, radix: u32) {
    if let Some(ch) = u32::from_str_radix(digits, radix)
        .ok()
        .and_then(char::from_u32)
    {
        text.push(ch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(src: &str) -> Vec<Vec<Vec<String>>> {
        parse(src)
            .pipelines
            .iter()
            .map(|p| {
                p.commands
                    .iter()
                    .map(|c| c.words.iter().map(|w| w.text.to_string()).collect())
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
        let script = parse("echo $(rm -rf /) `reboot` \"$(shutdown now)\"");
        let names: Vec<&str> = script
            .pipelines
            .iter()
            .map(|p| p.commands[0].words[0].text.as_ref())
            .collect();
        assert_eq!(names, ["echo", "rm", "reboot", "shutdown"]);
        // Spans point into the original text.
        let src = "echo $(rm -rf /)";
        let s = parse(src);
        let rm = &s.pipelines[1].commands[0].words[0];
        assert_eq!(&src[rm.span.clone()], "rm");
    }

    #[test]
    fn redirections_are_kept_apart_from_words() {
        let script = parse("echo x > /dev/sda 2>&1");
        let cmd = &script.pipelines[0].commands[0];
        assert_eq!(cmd.words.len(), 2);
        assert_eq!(cmd.redirects[0].target.text, "/dev/sda");
        assert_eq!(cmd.redirects[0].op, ">");
    }

    #[test]
    fn unterminated_text_is_reported_not_fatal() {
        let script = parse("rm -rf '/tmp");
        assert_eq!(script.warnings, vec![Warning::Unterminated]);
        assert_eq!(script.pipelines[0].commands[0].words[2].text, "/tmp");
    }

    #[test]
    fn deep_nesting_is_reported() {
        let mut src = String::from("x");
        for _ in 0..20 {
            src = format!("echo $({src})");
        }
        assert!(parse(&src).warnings.contains(&Warning::TooDeep));
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
        let script = parse("echo 'é' \"ü\" ß $'\\u00e9' \\ä");
        assert_eq!(script.pipelines[0].commands[0].words[1].text, "é");
    }
}
