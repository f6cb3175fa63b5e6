//! From shell text to the commands that would actually run.
//!
//! [`invocations`] reads a command line with [`crate::shell`], then looks through what hides the
//! real command: variable assignments and reserved words, absolute paths (`/bin/rm`), wrappers
//! (`sudo`, `env`, `nohup`, `xargs`, `timeout`, ...; each is kept as an invocation of its own so
//! that `sudo` itself can be flagged), shell payloads (`sh -c '...'`, `su -c`, `eval`,
//! `env -S`), and `find -exec`. Each resulting [`Invocation`] knows which commands feed it
//! through a pipe, so `curl ... | sh` is visible.
//!
//! Like the script it reads, the analysis is flat: an invocation is a few ranges of the script's
//! word list, and a payload's commands are appended to the same script. Reading a long script
//! therefore allocates a handful of times, not several times per command.

use crate::shell::{self, to_u32, Redirect, Script, Text, Warning, Word};
use std::cell::Cell;
use std::ops::Range;

/// No invocation: the end of an upstream chain.
const NONE: u32 = u32::MAX;

/// One invocation as stored: ranges of the script's words and redirections.
#[derive(Debug, Clone, Copy)]
struct Stored {
    name: Text,
    /// The words after the command word (a wrapper's own options; a command's arguments).
    args: (u32, u32),
    redirects: (u32, u32),
    span: (u32, u32),
    /// The innermost invocation of the command before this one in its pipeline, or [`NONE`].
    upstream: u32,
    /// The words before the command word: assignments (`PAGER=… git log`) and reserved words.
    before: (u32, u32),
    /// A wrapper with a command after it (`env uptime`, not `env`).
    wraps: bool,
    /// A shell (`sh -c`, `su -c`) whose payload was found and read as commands of its own.
    payload: bool,
}

/// Everything found in one shell argument.
#[derive(Debug, Clone)]
pub struct Analysis<'a> {
    script: Script<'a>,
    invocations: Vec<Stored>,
}

thread_local! {
    /// The invocation list of a dropped [`Analysis`], kept for the next one on the thread (as
    /// the script's vectors are).
    static SPARE: Cell<Vec<Stored>> = const { Cell::new(Vec::new()) };
}

impl Drop for Analysis<'_> {
    fn drop(&mut self) {
        if self.invocations.capacity() * std::mem::size_of::<Stored>() <= shell::KEEP_AT_MOST {
            let kept = std::mem::take(&mut self.invocations);
            let _ = SPARE.try_with(|slot| slot.set(kept));
        }
    }
}

impl<'a> Analysis<'a> {
    /// Every command that would run, in reading order (a wrapper before what it runs; a
    /// payload's commands right after the command that runs it).
    pub fn invocations(&self) -> impl ExactSizeIterator<Item = Invocation<'_>> + '_ {
        self.invocations.iter().map(move |stored| Invocation {
            analysis: self,
            stored,
        })
    }

    /// What prevented a complete reading, sorted, each kind once.
    pub fn warnings(&self) -> &[Warning] {
        self.script.warnings()
    }
}

/// One command that would run, with its name normalised.
#[derive(Debug, Clone, Copy)]
pub struct Invocation<'s> {
    analysis: &'s Analysis<'s>,
    stored: &'s Stored,
}

impl<'s> Invocation<'s> {
    /// Lowercased base name (`/usr/bin/RM.exe` → `rm`).
    pub fn name(&self) -> &'s str {
        self.analysis.script.text(self.stored.name)
    }

    /// The words after the command word, after quote removal.
    pub fn args(&self) -> &'s [Word] {
        let (from, to) = self.stored.args;
        self.analysis.script.word_slice(from as usize..to as usize)
    }

    /// The text of one of the script's words.
    pub fn text(&self, word: &Word) -> &'s str {
        self.analysis.script.word_text(word)
    }

    /// The arguments' texts.
    pub fn arg_texts(&self) -> impl Iterator<Item = &'s str> + 's {
        let script = &self.analysis.script;
        self.args().iter().map(move |w| script.word_text(w))
    }

    /// The redirections of the command (on its innermost invocation only).
    pub fn redirects(&self) -> &'s [Redirect] {
        let (from, to) = self.stored.redirects;
        self.analysis
            .script
            .redirects_at(from as usize..to as usize)
    }

    /// The variable assignments written before the command word (`LESSOPEN=… less f`), as
    /// `NAME=value` texts.
    pub fn assignments(&self) -> impl Iterator<Item = &'s str> + 's {
        let (from, to) = self.stored.before;
        let script = &self.analysis.script;
        script
            .word_slice(from as usize..to as usize)
            .iter()
            .map(move |w| script.word_text(w))
            .filter(|text| is_assignment(text.as_bytes()))
    }

    /// Whether this is a shell whose `-c` payload was found and read as commands of its own
    /// (`bash -c 'uptime'`); a shell without one runs a script or its standard input.
    pub fn has_payload(&self) -> bool {
        self.stored.payload
    }

    /// The command word as written (`/tmp/ls`, `./deploy.sh`, `rm`), after quote removal.
    pub fn command_word(&self) -> &'s str {
        let (_, word) = self.stored.before;
        let script = &self.analysis.script;
        script
            .word_slice(word as usize..word as usize + 1)
            .first()
            .map_or("", |w| script.word_text(w))
    }

    /// Whether this is a wrapper that runs a command after its own words (`sudo ls`, `env
    /// uptime`); a wrapper alone (`env`) runs nothing.
    pub fn wraps(&self) -> bool {
        self.stored.wraps
    }

    /// The operator of one of [`Self::redirects`] (`>`, `2>>`, `<`, `>&`, ...).
    pub fn redirect_op(&self, redirect: &Redirect) -> &'s str {
        self.analysis.script.redirect_op(redirect)
    }

    /// Byte span in the original argument, from the command word to its last argument.
    pub fn span(&self) -> Range<usize> {
        self.stored.span.0 as usize..self.stored.span.1 as usize
    }

    /// Names of the commands before this one in its pipeline, nearest first.
    pub fn upstream(&self) -> impl Iterator<Item = &'s str> + 's {
        let all = &self.analysis.invocations;
        let script = &self.analysis.script;
        let mut next = self.stored.upstream;
        std::iter::from_fn(move || {
            let stored = all.get(next as usize)?;
            next = stored.upstream;
            Some(script.text(stored.name))
        })
    }

    /// The arguments joined by single spaces after quote removal, what `args` regexes see, into
    /// `text` (cleared first), reusing its allocation.
    pub fn write_args_text(&self, text: &mut String) {
        text.clear();
        for (i, arg) in self.arg_texts().enumerate() {
            if i > 0 {
                text.push(' ');
            }
            text.push_str(arg);
        }
    }

    /// The flags given, as written.
    pub fn flags(&self) -> FlagSet<'s> {
        let mut set = FlagSet::default();
        self.for_each_flag(|short, long| {
            set.short |= short;
            set.long.extend(long);
        });
        set
    }

    /// Call `found` with each flag word's short-flag bits (see [`short_mask`]) and long name:
    /// `-rf` gives the bits of `r` and `f` and the long name `rf` (PowerShell's and `find`'s
    /// `-Force`, `-name` are long names too); `--force=yes` gives the long name `force`. Stops
    /// at `--`.
    pub fn for_each_flag(&self, mut found: impl FnMut(u64, Option<&'s str>)) {
        let script = &self.analysis.script;
        // Which arguments start with `-` (the reader noted it), 64 at a time and without a
        // branch per argument; most invocations have none, and the rest are visited by their
        // bits.
        for chunk in self.args().chunks(64) {
            let mut dashed = chunk
                .iter()
                .enumerate()
                .fold(0u64, |bits, (i, word)| bits | u64::from(word.dashed) << i);
            while dashed != 0 {
                let i = dashed.trailing_zeros() as usize;
                dashed &= dashed - 1;
                let Some(word) = chunk.get(i) else { break };
                if !flag_word(script.word_text(word), &mut found) {
                    return;
                }
            }
        }
    }
}

/// Report one argument that starts with `-` to `found` (see [`Invocation::for_each_flag`]);
/// false at `--`, after which nothing is a flag.
pub(crate) fn flag_word<'s>(text: &'s str, found: &mut impl FnMut(u64, Option<&'s str>)) -> bool {
    if let &[b'-', letter] = text.as_bytes() {
        // `-l`, `-r`: the commonest flag word, one letter and no long name.
        if letter == b'-' {
            return false;
        }
        found(SHORT_BITS[usize::from(letter)], None);
        return true;
    }
    if text == "--" {
        return false;
    }
    let dashes = if text.starts_with("--") { 2 } else { 1 };
    // Flags are short: a byte loop, not a call to a vectorised search.
    let end = text
        .bytes()
        .position(|b| b == b'=')
        .unwrap_or(text.len())
        .max(dashes);
    let name = text.get(dashes..end).unwrap_or_default();
    if !name.is_empty() {
        let mut short = 0;
        if dashes == 1 {
            for b in name.bytes() {
                short |= SHORT_BITS[usize::from(b)];
            }
        }
        found(short, (dashes == 2 || name.len() > 1).then_some(name));
    }
    true
}

/// The flags of one invocation: short letters and digits as a bit set, long names as written
/// (without dashes or `=value`; compare them ignoring ASCII case).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlagSet<'s> {
    short: u64,
    pub long: Vec<&'s str>,
}

impl FlagSet<'_> {
    /// Whether the short flag `c` (`r` of `-rf`) was given.
    pub fn has_short(&self, c: char) -> bool {
        u8::try_from(c)
            .ok()
            .and_then(short_bit)
            .is_some_and(|bit| self.short & bit != 0)
    }

    /// Whether any of the short flags in `mask` (see [`short_mask`]) was given.
    pub fn has_any_short(&self, mask: u64) -> bool {
        self.short & mask != 0
    }

    /// Whether the long flag `name` was given (ignoring ASCII case).
    pub fn has_long(&self, name: &str) -> bool {
        self.long.iter().any(|l| l.eq_ignore_ascii_case(name))
    }
}

/// The bit of an ASCII letter or digit in [`FlagSet`]'s short set.
fn short_bit(c: u8) -> Option<u64> {
    match SHORT_BITS[usize::from(c)] {
        0 => None,
        bit => Some(bit),
    }
}

/// [`short_bit`] as a table (0 for bytes that are no short flag): digits, upper case, lower
/// case.
const SHORT_BITS: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = 1 << i;
        i += 1;
    }
    i = 0;
    while i < 26 {
        table[b'A' as usize + i] = 1 << (10 + i);
        table[b'a' as usize + i] = 1 << (36 + i);
        i += 1;
    }
    table
};

/// The short-flag bits of `letters` (ASCII letters and digits; others are ignored).
pub fn short_mask(letters: impl IntoIterator<Item = char>) -> u64 {
    letters
        .into_iter()
        .filter_map(|c| u8::try_from(c).ok().and_then(short_bit))
        .fold(0, |mask, bit| mask | bit)
}

/// Wrappers: they run the rest of their words as a command. Each lists the options that take a
/// separate value and how many leading positional words belong to the wrapper.
#[derive(Debug)]
struct Wrapper {
    takes_value: &'static [&'static str],
    /// [`key`] of each of `takes_value` (0 for those too long to have one).
    keys: &'static [u128],
    positionals: usize,
    /// `env`: assignments are its own words, and `-S` splits a string into a command.
    is_env: bool,
}

impl Wrapper {
    /// Whether the option `text` takes the next word as its value.
    fn takes_value(&self, text: &str) -> bool {
        match key(text.as_bytes()) {
            // Too long for a key: compare the text.
            0 => self.takes_value.contains(&text),
            k => self.keys.contains(&k),
        }
    }
}

/// A wrapper: how many positional words it takes, and its options that take a value.
macro_rules! wrapper {
    ($positionals:expr, [$($option:literal),* $(,)?]) => {
        Wrapper {
            takes_value: &[$($option),*],
            keys: &[$(const_key($option.as_bytes())),*],
            positionals: $positionals,
            is_env: false,
        }
    };
}

static SUDO: Wrapper = wrapper!(
    0,
    [
        "-u",
        "-g",
        "-C",
        "-D",
        "-h",
        "-p",
        "-r",
        "-t",
        "-U",
        "-T",
        "--user",
        "--group",
        "--chdir",
        "--prompt",
        "--role",
        "--type",
        "--other-user",
        "--command-timeout",
        "--close-from",
        "--host",
    ]
);
static DOAS: Wrapper = wrapper!(0, ["-u", "-C"]);
static PKEXEC: Wrapper = wrapper!(0, ["--user"]);
static RUNUSER: Wrapper = wrapper!(0, ["-u", "-g", "-G", "--user", "--group", "--supp-group"]);
static ENV: Wrapper = Wrapper {
    is_env: true,
    ..wrapper!(
        0,
        [
            "-u",
            "-C",
            "--unset",
            "--chdir",
            "-a",
            "--argv0",
            "-S",
            "--split-string"
        ]
    )
};
static NO_OPTIONS: Wrapper = wrapper!(0, []);
static NICE: Wrapper = wrapper!(0, ["-n", "--adjustment"]);
static IONICE: Wrapper = wrapper!(0, ["-c", "-n", "-p", "-P", "-u", "--class", "--classdata"]);
static TIME: Wrapper = wrapper!(0, ["-f", "-o", "--format", "--output"]);
static TIMEOUT: Wrapper = wrapper!(1, ["-s", "-k", "--signal", "--kill-after"]);
static STDBUF: Wrapper = wrapper!(0, ["-i", "-o", "-e"]);
static CHROOT: Wrapper = wrapper!(1, ["--userspec", "--groups"]);
static XARGS: Wrapper = wrapper!(
    0,
    [
        "-I",
        "-n",
        "-P",
        "-d",
        "-L",
        "-s",
        "-E",
        "-a",
        "--max-args",
        "--max-procs",
        "--delimiter",
        "--arg-file",
        "--max-lines",
        "--max-chars",
        "--eof",
        "--replace",
    ]
);
static WATCH: Wrapper = wrapper!(0, ["-n", "-d", "--interval"]);
static EXEC: Wrapper = wrapper!(0, ["-a"]);
static FLOCK: Wrapper = wrapper!(1, ["-w", "-E", "--timeout", "--conflict-exit-code"]);
static STRACE: Wrapper = wrapper!(0, ["-e", "-o", "-p", "-s", "-u"]);

/// What a command name means to the analysis.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// An ordinary command.
    Plain,
    /// `for`, `case`, `function`: what follows is not read as a command.
    Stop,
    /// A shell: its `-c` argument is a command line of its own.
    Shell,
    /// `su`: `-c` / `--command` takes a command line.
    Su,
    Eval,
    Find,
    Wrapper(&'static Wrapper),
}

/// A name's bytes and length as one number, for names of up to 15 bytes (0 for longer ones,
/// which are never special): a `match` on it is a binary search, not one string compare per
/// arm. The bytes are the number's low bytes, the length its top byte.
///
/// The bytes are read as two overlapping loads (the first and the last 2, 4 or 8 bytes): OR-ing
/// the overlap with itself changes nothing, and no byte goes through memory one at a time, which
/// would stall the load that follows.
fn key(name: &[u8]) -> u128 {
    fn load<const N: usize>(name: &[u8], at: usize) -> [u8; N] {
        name.get(at..at + N)
            .and_then(|bytes| bytes.try_into().ok())
            .unwrap_or([0; N])
    }
    let len = name.len();
    let packed = match len {
        0 => 0,
        1 => u128::from(name[0]),
        2..=3 => {
            u128::from(u16::from_le_bytes(load(name, 0)))
                | u128::from(u16::from_le_bytes(load(name, len - 2))) << (8 * (len - 2))
        }
        4..=7 => {
            u128::from(u32::from_le_bytes(load(name, 0)))
                | u128::from(u32::from_le_bytes(load(name, len - 4))) << (8 * (len - 4))
        }
        8..=15 => {
            u128::from(u64::from_le_bytes(load(name, 0)))
                | u128::from(u64::from_le_bytes(load(name, len - 8))) << (8 * (len - 8))
        }
        _ => return 0,
    };
    packed | (len as u128) << 120
}

/// The byte tests (SWAR) on a packed name of one width, `$ones` having 1 in each name byte:
/// `$equal(name, byte)` gives the high bit of every name byte equal to `byte` (which must not be
/// 0, the padding: a name byte of 0 is never reported), `$upper(name)` that of every ASCII
/// upper-case letter. No carry crosses from one byte into the next.
macro_rules! byte_tests {
    ($t:ty, $ones:expr, $equal:ident, $upper:ident) => {
        fn $equal(name: $t, byte: u8) -> $t {
            let v = name ^ ($ones * <$t>::from(byte));
            // A byte of `v` is 0 exactly where the high bit of this is clear.
            !(((v & ($ones * 0x7F)) + $ones * 0x7F) | v) & ($ones * 0x80)
        }

        fn $upper(name: $t) -> $t {
            let (low7, high) = (name & ($ones * 0x7F), $ones * 0x80);
            let at_least_a = (low7 + $ones * (0x80 - <$t>::from(b'A'))) & high;
            let above_z = (low7 + $ones * (0x80 - <$t>::from(b'Z' + 1))) & high;
            at_least_a & !above_z & !name & high
        }
    };
}

/// 1 in each of a [`key`]'s 15 name bytes (its top byte is the length).
const ONES: u128 = u128::from_le_bytes([1; 16]) >> 8;
byte_tests!(u128, ONES, bytes_equal, upper_case_bytes);

/// The same tests on one 64-bit word, for names of up to 7 bytes (see [`short_name`]): half
/// the work of the 128-bit tests, for most names.
const ONES_64: u64 = u64::from_le_bytes([1; 8]);
byte_tests!(u64, ONES_64, bytes_equal_64, upper_case_bytes_64);

/// A [`key`]'s name bytes as one 64-bit word when the name has at most 7 bytes: the top half
/// then holds only the length, and the eighth byte is padding (0, never reported).
fn short_name(key: u128) -> Option<u64> {
    let high = (key >> 64) as u64;
    (high & (u64::MAX >> 8) == 0).then_some(key as u64)
}

/// Whether a word with [`key`] `word_key` could be an assignment (`NAME=value`): false only
/// when the key shows every byte and none is `=`.
fn may_be_assignment(word_key: u128) -> bool {
    word_key == 0
        || match short_name(word_key) {
            Some(name) => bytes_equal_64(name, b'=') != 0,
            None => bytes_equal(word_key, b'=') != 0,
        }
}

/// Whether a word with [`key`] `word_key` is its own command name as [`name_range`] would cut
/// it: a key of all its bytes (1 to 15 of them), with no path separator, no upper-case letter
/// and no `.exe` ending.
fn is_plain_name(word_key: u128) -> bool {
    if word_key == 0 {
        return false;
    }
    let len = (word_key >> 120) as u32;
    // The last four bytes of the name, when it has more than four.
    let tail = if len > 4 {
        (word_key >> (8 * (len - 4))) as u32
    } else {
        0
    };
    let unplain = match short_name(word_key) {
        Some(name) => {
            (bytes_equal_64(name, b'/') | bytes_equal_64(name, b'\\') | upper_case_bytes_64(name))
                != 0
        }
        None => {
            (bytes_equal(word_key, b'/')
                | bytes_equal(word_key, b'\\')
                | upper_case_bytes(word_key))
                != 0
        }
    };
    !unplain && tail != u32::from_le_bytes(*b".exe")
}

/// [`key`] for the constants.
const fn const_key(name: &[u8]) -> u128 {
    if name.len() > 15 {
        return 0;
    }
    let mut k = (name.len() as u128) << 120;
    let mut i = 0;
    while i < name.len() {
        k |= (name[i] as u128) << (8 * i);
        i += 1;
    }
    k
}

macro_rules! keys {
    ($($konst:ident = $name:literal),* $(,)?) => {
        $(const $konst: u128 = const_key($name);)*
    };
}

keys! {
    K_SH = b"sh", K_BASH = b"bash", K_DASH = b"dash", K_ZSH = b"zsh", K_KSH = b"ksh",
    K_MKSH = b"mksh", K_ASH = b"ash", K_FISH = b"fish", K_CSH = b"csh", K_TCSH = b"tcsh",
    K_BUSYBOX_SH = b"busybox-sh", K_PWSH = b"pwsh", K_POWERSHELL = b"powershell",
    K_SU = b"su", K_EVAL = b"eval", K_FIND = b"find",
    K_FOR = b"for", K_CASE = b"case", K_FUNCTION = b"function",
    K_SUDO = b"sudo", K_DOAS = b"doas", K_PKEXEC = b"pkexec", K_RUNUSER = b"runuser",
    K_ENV = b"env", K_NOHUP = b"nohup", K_NICE = b"nice", K_IONICE = b"ionice",
    K_TIME = b"time", K_TIMEOUT = b"timeout", K_STDBUF = b"stdbuf", K_SETSID = b"setsid",
    K_CHROOT = b"chroot", K_XARGS = b"xargs", K_WATCH = b"watch", K_EXEC = b"exec",
    K_COMMAND = b"command", K_BUILTIN = b"builtin", K_BUSYBOX = b"busybox",
    K_FLOCK = b"flock", K_STRACE = b"strace", K_UNBUFFER = b"unbuffer",
    K_BANG = b"!", K_OPEN_BRACE = b"{", K_CLOSE_BRACE = b"}", K_IF = b"if", K_THEN = b"then",
    K_ELSE = b"else", K_ELIF = b"elif", K_FI = b"fi", K_DO = b"do", K_DONE = b"done",
    K_WHILE = b"while", K_UNTIL = b"until", K_COPROC = b"coproc",
}

/// Every name the analysis treats specially, with whether it is a reserved word (as written)
/// and what it means as a command name. One list gives both tables below, in the same order.
macro_rules! special_names {
    ($(($key:ident, $reserved:expr, $kind:expr)),* $(,)?) => {
        /// The special names' keys and whether each is reserved, in list order.
        const SPECIAL_NAMES: &[(u128, bool)] = &[$(($key, $reserved)),*];
        /// What each special name means as a command, in list order.
        static SPECIAL_KINDS: &[Kind] = &[$($kind),*];
    };
}

special_names! {
    (K_SH, false, Kind::Shell), (K_BASH, false, Kind::Shell), (K_DASH, false, Kind::Shell),
    (K_ZSH, false, Kind::Shell), (K_KSH, false, Kind::Shell), (K_MKSH, false, Kind::Shell),
    (K_ASH, false, Kind::Shell), (K_FISH, false, Kind::Shell), (K_CSH, false, Kind::Shell),
    (K_TCSH, false, Kind::Shell), (K_BUSYBOX_SH, false, Kind::Shell),
    (K_PWSH, false, Kind::Shell), (K_POWERSHELL, false, Kind::Shell),
    (K_SU, false, Kind::Su), (K_EVAL, false, Kind::Eval), (K_FIND, false, Kind::Find),
    (K_FOR, false, Kind::Stop), (K_CASE, false, Kind::Stop), (K_FUNCTION, false, Kind::Stop),
    (K_SUDO, false, Kind::Wrapper(&SUDO)), (K_DOAS, false, Kind::Wrapper(&DOAS)),
    (K_PKEXEC, false, Kind::Wrapper(&PKEXEC)), (K_RUNUSER, false, Kind::Wrapper(&RUNUSER)),
    (K_ENV, false, Kind::Wrapper(&ENV)), (K_NICE, false, Kind::Wrapper(&NICE)),
    (K_IONICE, false, Kind::Wrapper(&IONICE)), (K_TIMEOUT, false, Kind::Wrapper(&TIMEOUT)),
    (K_STDBUF, false, Kind::Wrapper(&STDBUF)), (K_CHROOT, false, Kind::Wrapper(&CHROOT)),
    (K_XARGS, false, Kind::Wrapper(&XARGS)), (K_WATCH, false, Kind::Wrapper(&WATCH)),
    (K_EXEC, false, Kind::Wrapper(&EXEC)), (K_FLOCK, false, Kind::Wrapper(&FLOCK)),
    (K_STRACE, false, Kind::Wrapper(&STRACE)),
    (K_NOHUP, false, Kind::Wrapper(&NO_OPTIONS)), (K_SETSID, false, Kind::Wrapper(&NO_OPTIONS)),
    (K_COMMAND, false, Kind::Wrapper(&NO_OPTIONS)),
    (K_BUILTIN, false, Kind::Wrapper(&NO_OPTIONS)),
    (K_BUSYBOX, false, Kind::Wrapper(&NO_OPTIONS)),
    (K_UNBUFFER, false, Kind::Wrapper(&NO_OPTIONS)),
    // `time` is a reserved word of the shell and, as `/usr/bin/time`, a wrapper.
    (K_TIME, true, Kind::Wrapper(&TIME)),
    (K_BANG, true, Kind::Plain), (K_OPEN_BRACE, true, Kind::Plain),
    (K_CLOSE_BRACE, true, Kind::Plain), (K_IF, true, Kind::Plain), (K_THEN, true, Kind::Plain),
    (K_ELSE, true, Kind::Plain), (K_ELIF, true, Kind::Plain), (K_FI, true, Kind::Plain),
    (K_DO, true, Kind::Plain), (K_DONE, true, Kind::Plain), (K_WHILE, true, Kind::Plain),
    (K_UNTIL, true, Kind::Plain), (K_COPROC, true, Kind::Plain),
}

/// Slots of [`NAME_SLOTS`]: more than four times the special names, so that a lookup of an
/// ordinary name almost always ends at its first slot.
const NAME_SLOT_COUNT: usize = 256;

/// Bit of a [`NAME_SLOTS`] entry: the name is a reserved word.
const RESERVED: u8 = 0x80;

/// The special names as an open-addressing hash table keyed by [`key`]: each slot holds a key
/// (0 when empty) and its entry, the name's place in [`SPECIAL_KINDS`] plus one, with
/// [`RESERVED`] set for a reserved word. One lookup answers both questions about a name, where
/// binary searches over the keys took about 60 instructions a command.
static NAME_SLOTS: [(u128, u8); NAME_SLOT_COUNT] = {
    let mut table = [(0u128, 0u8); NAME_SLOT_COUNT];
    let mut i = 0;
    while i < SPECIAL_NAMES.len() {
        let (key, reserved) = SPECIAL_NAMES[i];
        let mut slot = name_slot(key);
        while table[slot].0 != 0 {
            slot = (slot + 1) % NAME_SLOT_COUNT;
        }
        let reserved_bit = if reserved { RESERVED } else { 0 };
        table[slot] = (key, (i as u8 + 1) | reserved_bit);
        i += 1;
    }
    table
};

/// Where the search for `key` starts in [`NAME_SLOTS`] (a multiplicative hash of both halves).
const fn name_slot(key: u128) -> usize {
    let folded = (key as u64) ^ ((key >> 64) as u64).rotate_left(29);
    (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize % NAME_SLOT_COUNT
}

/// The [`NAME_SLOTS`] entry of the name with [`key`] `key`, 0 for an ordinary name. The table
/// always has empty slots, so the search ends.
fn name_entry(key: u128) -> u8 {
    let mut slot = name_slot(key);
    loop {
        let (found, entry) = NAME_SLOTS.get(slot).copied().unwrap_or_default();
        if found == key {
            // The key itself, or an empty slot while looking up 0 (a name too long to be
            // special), whose entry is 0.
            return entry;
        }
        if found == 0 {
            return 0;
        }
        slot = (slot + 1) % NAME_SLOT_COUNT;
    }
}

/// What the command name with [`key`] `name_key` means to the analysis.
fn classify(name_key: u128) -> Kind {
    kind_of(name_entry(name_key))
}

/// What a name with the [`NAME_SLOTS`] entry `entry` means as a command.
fn kind_of(entry: u8) -> Kind {
    match usize::from(entry & !RESERVED).checked_sub(1) {
        Some(index) => SPECIAL_KINDS.get(index).copied().unwrap_or(Kind::Plain),
        None => Kind::Plain,
    }
}

/// Read a shell argument into the invocations it would cause.
pub fn invocations(text: &str) -> Analysis<'_> {
    let script = shell::parse(text);
    let commands = script.commands().len();
    let mut invocations = SPARE.try_with(|slot| slot.take()).unwrap_or_default();
    invocations.clear();
    invocations.reserve(commands + commands / 2);
    let mut analysis = Analysis {
        script,
        invocations,
    };
    analysis.collect(0..commands);
    analysis.script.sort_warnings();
    analysis
}

impl Analysis<'_> {
    fn word(&self, index: usize) -> Option<Word> {
        self.script.word_slice(index..index + 1).first().copied()
    }

    fn word_text(&self, index: usize) -> &str {
        self.script
            .word_slice(index..index + 1)
            .first()
            .map_or("", |w| self.script.word_text(w))
    }

    /// Analyse the script's commands at `range` (a line, or a payload's commands).
    fn collect(&mut self, range: Range<usize>) {
        let mut upstream = NONE;
        for index in range {
            let Some(&command) = self.script.commands().get(index) else {
                break;
            };
            if command.starts_pipeline {
                upstream = NONE;
            }
            let redirects = command.redirect_range();
            if let Some(innermost) = self.unwrap(
                command.word_range(),
                Some(redirects),
                upstream,
                usize::from(command.depth),
            ) {
                upstream = innermost;
            }
        }
    }

    /// Record the invocations in `words` (wrappers first); return the index of the innermost.
    fn unwrap(
        &mut self,
        words: Range<usize>,
        redirects: Option<Range<usize>>,
        upstream: u32,
        depth: usize,
    ) -> Option<u32> {
        let end = words.end;
        let mut rest = words.start;
        let mut innermost = None;
        loop {
            let before = rest;
            // Assignments (`FOO=bar cmd`) and reserved words (`! cmd`, `{ cmd; }`) are not
            // commands.
            // The first word's key serves both this test and, for a bare lower-case name (most
            // of them), the name's classification.
            // One lookup of the key says whether the word is reserved and, for a bare
            // lower-case name, what it means as a command.
            let (first, first_key, first_entry) = loop {
                let Some(word) = self.word(rest).filter(|_| rest < end) else {
                    return innermost;
                };
                let text = self.script.text_bytes(word.text);
                let word_key = key(text);
                let entry = name_entry(word_key);
                if entry & RESERVED != 0 || (may_be_assignment(word_key) && is_assignment(text)) {
                    rest += 1;
                } else {
                    break (word, word_key, entry);
                }
            };
            let (name, kind) = self.command_name(first.text, first_key, first_entry);
            let payload_flag = match kind {
                Kind::Stop => return innermost,
                Kind::Shell => self.find_payload(rest + 1..end, false),
                Kind::Su => self.find_payload(rest + 1..end, true),
                _ => None,
            };
            let (own_end, wraps) = match kind {
                Kind::Wrapper(wrapper) => {
                    (rest + 1 + self.wrapper_words(wrapper, rest + 1..end), true)
                }
                _ => (end, false),
            };
            let args = (to_u32(rest + 1), to_u32(own_end));
            let own_redirects = match &redirects {
                Some(r) if !wraps || own_end >= end => (to_u32(r.start), to_u32(r.end)),
                _ => (0, 0),
            };
            let index = to_u32(self.invocations.len());
            self.invocations.push(Stored {
                name,
                args,
                redirects: own_redirects,
                span: self.cover(rest..own_end),
                upstream,
                before: (to_u32(before), to_u32(rest)),
                wraps: wraps && own_end < end,
                payload: false,
            });
            innermost = Some(index);
            if let Kind::Plain = kind {
                // Most commands: no wrapper, payload or `-exec` to look into.
                return innermost;
            }

            if let Some(payload) = payload_flag.and_then(|i| self.word(i).filter(|_| i < end)) {
                // `sh -c 'payload'`, `su -c 'payload'`: the payload is a command line of its own.
                if let Some(stored) = self.invocations.get_mut(index as usize) {
                    stored.payload = true;
                }
                self.payload(payload.text, payload.span(), depth);
            }
            match kind {
                Kind::Eval if own_end > rest + 1 => {
                    let mut joined = String::new();
                    for i in rest + 1..own_end {
                        if i > rest + 1 {
                            joined.push(' ');
                        }
                        joined.push_str(self.word_text(i));
                    }
                    let span = self.cover(rest + 1..own_end);
                    let range = self.script.read_payload_copy(
                        &joined,
                        span.0 as usize..span.1 as usize,
                        depth + 1,
                    );
                    self.collect(range);
                }
                Kind::Wrapper(wrapper) if wrapper.is_env => {
                    // `env -S 'cmd args'` splits its string into a command.
                    let split = (rest..own_end)
                        .find(|&i| matches!(self.word_text(i), "-S" | "--split-string"));
                    if let Some(payload) =
                        split.and_then(|i| self.word(i + 1).filter(|_| i + 1 < end))
                    {
                        self.payload(payload.text, payload.span(), depth);
                    }
                }
                Kind::Find => self.find_exec(rest..own_end, upstream, depth),
                Kind::Wrapper(wrapper) if std::ptr::eq(wrapper, &WATCH) && own_end + 1 == end => {
                    // `watch 'ps aux | grep x'`: watch runs its one word with `sh -c`.
                    if let Some(payload) = self.word(own_end).filter(|w| {
                        self.script
                            .word_text(w)
                            .contains([' ', '\t', '|', ';', '&'])
                    }) {
                        self.payload(payload.text, payload.span(), depth);
                        return innermost;
                    }
                }
                _ => {}
            }
            if !wraps || own_end >= end {
                return innermost;
            }
            rest = own_end;
        }
    }

    /// Read a payload (`sh -c` text, `env -S` string) as a command line of its own and analyse
    /// its commands. Its spans are all `span`, the payload's span in the original argument.
    fn payload(&mut self, text: Text, span: Range<usize>, depth: usize) {
        let range = self.script.read_payload(text, span, depth + 1);
        self.collect(range);
    }

    /// `find ... -exec CMD ARGS ;` runs CMD for each file.
    fn find_exec(&mut self, words: Range<usize>, upstream: u32, depth: usize) {
        let mut i = words.start;
        while i < words.end {
            if matches!(self.word_text(i), "-exec" | "-execdir" | "-ok" | "-okdir") {
                let start = i + 1;
                let end = (start..words.end)
                    .find(|&j| matches!(self.word_text(j), ";" | "+"))
                    .unwrap_or(words.end);
                if start < end {
                    self.unwrap(start..end, None, upstream, depth);
                }
                i = end;
            }
            i += 1;
        }
    }

    /// How many words of `words` are a wrapper's own (options, their values, positionals).
    fn wrapper_words(&self, wrapper: &Wrapper, words: Range<usize>) -> usize {
        let mut positionals = wrapper.positionals;
        let mut i = words.start;
        while i < words.end {
            let text = self.word_text(i);
            if text == "--" {
                return i + 1 - words.start;
            }
            if wrapper.is_env && is_assignment(text.as_bytes()) {
                i += 1;
            } else if text.starts_with('-') && text.len() > 1 {
                // `-u root` takes the next word; `-uroot` and `--user=root` do not.
                i += if wrapper.takes_value(text) { 2 } else { 1 };
            } else if positionals > 0 {
                positionals -= 1;
                i += 1;
            } else {
                return i - words.start;
            }
        }
        words.len()
    }

    /// Index (in the script's words) of the payload after `-c` in a shell's options, if any.
    fn find_payload(&self, words: Range<usize>, is_su: bool) -> Option<usize> {
        let mut skip_value = false;
        for i in words {
            let text = self.word_text(i);
            if std::mem::take(&mut skip_value) {
                continue;
            }
            // Options whose value is the next word: `bash -o pipefail -c '…'`.
            if matches!(text, "-o" | "+o" | "-O" | "+O" | "--rcfile" | "--init-file") {
                skip_value = true;
                continue;
            }
            if text == "--command" && is_su {
                return Some(i + 1);
            }
            if text.eq_ignore_ascii_case("-command") {
                return Some(i + 1);
            }
            if let Some(letters) = text.strip_prefix('-') {
                if !letters.starts_with('-') && letters.contains('c') {
                    return Some(i + 1);
                }
            } else if !is_su {
                // `bash script.sh`: a file, not a command line.
                return None;
            }
        }
        None
    }

    /// The span from the first word's start to the last word's end.
    fn cover(&self, words: Range<usize>) -> (u32, u32) {
        let slice = self.script.word_slice(words);
        match (slice.first(), slice.last()) {
            (Some(first), Some(last)) => {
                let (first, last) = (first.span(), last.span());
                (
                    to_u32(first.start.min(last.start)),
                    to_u32(first.end.max(last.end)),
                )
            }
            _ => (0, 0),
        }
    }

    /// [`command_name`] of a word's text, as a part of that text when it needs no lowercasing,
    /// and what that name means here. `word_key` is the [`key`] of the whole word, and
    /// `word_entry` its [`name_entry`].
    fn command_name(&mut self, word: Text, word_key: u128, word_entry: u8) -> (Text, Kind) {
        if is_plain_name(word_key) {
            // Most names: the whole word, already lower case (the key says so without a scan).
            return (word, kind_of(word_entry));
        }
        let text = self.script.text(word);
        let (start, end, lower) = name_range(text);
        let name = text.get(start..end).unwrap_or_default();
        if lower {
            let lowered = name.to_ascii_lowercase();
            let kind = classify(key(lowered.as_bytes()));
            (self.script.push_owned(&lowered), kind)
        } else if start == 0 && end == text.len() {
            (word, kind_of(word_entry))
        } else {
            (word.slice(start..end), classify(key(name.as_bytes())))
        }
    }
}

/// The byte range of a command word's base name (`/usr/bin/RM.exe` → `RM`), and whether it
/// has upper-case letters to lower.
fn name_range(word: &str) -> (usize, usize, bool) {
    // Both separators are ASCII: a byte search finds them without decoding characters.
    let bytes = word.as_bytes();
    let start = bytes
        .iter()
        .rposition(|&b| b == b'/' || b == b'\\')
        .map_or(0, |i| i + 1);
    let base = bytes.get(start..).unwrap_or_default();
    let has_exe = base.len() > 4
        && base
            .get(base.len() - 4..)
            .is_some_and(|ext| ext.eq_ignore_ascii_case(b".exe"));
    let end = if has_exe { word.len() - 4 } else { word.len() };
    let lower = bytes
        .get(start..end)
        .is_some_and(|name| name.iter().any(u8::is_ascii_uppercase));
    (start, end, lower)
}

/// `/usr/bin/RM.exe` → `rm`.
pub fn command_name(word: &str) -> String {
    let (start, end, _) = name_range(word);
    word.get(start..end)
        .unwrap_or_default()
        .to_ascii_lowercase()
}

fn is_assignment(text: &[u8]) -> bool {
    let Some(eq) = text.iter().position(|&b| b == b'=') else {
        return false;
    };
    let name = text.get(..eq).unwrap_or_default();
    name.first()
        .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
        && name.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<String> {
        invocations(text)
            .invocations()
            .map(|i| i.name().to_string())
            .collect()
    }

    #[test]
    fn wrappers_are_looked_through_and_kept() {
        assert_eq!(
            names("sudo -u root env FOO=1 nohup /bin/rm -rf /"),
            ["sudo", "env", "nohup", "rm"]
        );
        assert_eq!(
            names("timeout 10 nice -n 5 rm x"),
            ["timeout", "nice", "rm"]
        );
        assert_eq!(
            names("find / -name x | xargs -0 rm -f"),
            ["find", "xargs", "rm"]
        );
    }

    #[test]
    fn shell_payloads_are_read() {
        assert_eq!(names("bash -c 'rm -rf /tmp/x'"), ["bash", "rm"]);
        assert_eq!(names("sh -lc \"curl x | sh\""), ["sh", "curl", "sh"]);
        assert_eq!(names("su -c 'reboot' root"), ["su", "reboot"]);
        assert_eq!(names("eval 'rm -rf /'"), ["eval", "rm"]);
        assert_eq!(names("bash script.sh -c x"), ["bash"]);
        assert_eq!(names("find /tmp -exec rm -rf {} \\;"), ["find", "rm"]);
        assert_eq!(names("env -S 'rm -rf /' ; ls"), ["env", "rm", "ls"]);
        assert_eq!(names("sh -c rm; ls"), ["sh", "rm", "ls"]);
    }

    #[test]
    fn payload_spans_cover_the_payload_word() {
        let text = "bash -c 'rm -rf /'";
        let analysis = invocations(text);
        let rm = analysis.invocations().nth(1).expect("rm");
        assert_eq!(&text[rm.span()], "'rm -rf /'");
        // An unquoted payload keeps the spans of its own words (it is a part of the input).
        let text = "bash -c reboot";
        let analysis = invocations(text);
        let reboot = analysis.invocations().nth(1).expect("reboot");
        assert_eq!(&text[reboot.span()], "reboot");
    }

    #[test]
    fn pipelines_know_their_upstream() {
        let analysis = invocations("curl -fsSL https://x | grep y | sudo bash; sh");
        let all: Vec<_> = analysis.invocations().collect();
        let bash = all[3];
        assert_eq!(bash.name(), "bash");
        assert_eq!(bash.upstream().collect::<Vec<_>>(), ["grep", "curl"]);
        assert_eq!(all[2].upstream().collect::<Vec<_>>(), ["grep", "curl"]);
        assert_eq!(all[4].upstream().count(), 0, "a new pipeline");
        // A payload inside a pipeline does not feed the next command.
        let analysis = invocations("curl x | sh -c 'a | b' | sh");
        let last = analysis.invocations().last().expect("sh");
        assert_eq!(last.upstream().collect::<Vec<_>>(), ["sh", "curl"]);
    }

    #[test]
    fn flags_are_split_combined_and_long() {
        let analysis = invocations("rm -r -f --no-preserve-root -Force x -- -y");
        let flags = analysis.invocations().next().expect("rm").flags();
        assert!(flags.has_short('r') && flags.has_short('f'));
        assert!(flags.has_long("no-preserve-root") && flags.has_long("force"));
        assert!(!flags.has_short('y'));
        assert!(flags.has_any_short(short_mask(['x', 'f'])));
        assert!(!flags.has_any_short(short_mask(['x', 'y'])));
    }

    #[test]
    fn redirects_belong_to_the_innermost_command() {
        let analysis = invocations("sudo tee x > /dev/sda");
        let all: Vec<_> = analysis.invocations().collect();
        assert!(all[0].redirects().is_empty());
        assert_eq!(all[1].text(&all[1].redirects()[0].target), "/dev/sda");
    }

    #[test]
    fn wrapper_options_are_found_by_key_and_by_text() {
        assert!(SUDO.takes_value("-u") && SUDO.takes_value("--command-timeout"));
        assert!(!SUDO.takes_value("-x") && !SUDO.takes_value("--command-timeoutx"));
        assert!(!SUDO.takes_value("--a-very-long-unknown-option") && !SUDO.takes_value(""));
        assert!(ENV.is_env && !SUDO.is_env && ENV.takes_value("-S"));
        assert_eq!(
            names("sudo --command-timeout 5 --a-very-long-unknown-option reboot"),
            ["sudo", "reboot"]
        );
    }

    /// The classification as it was written before the hash table: a `match` on the keys.
    fn classify_by_search(name_key: u128) -> Kind {
        match name_key {
            K_SH | K_BASH | K_DASH | K_ZSH | K_KSH | K_MKSH | K_ASH | K_FISH | K_CSH | K_TCSH
            | K_BUSYBOX_SH | K_PWSH | K_POWERSHELL => Kind::Shell,
            K_SU => Kind::Su,
            K_EVAL => Kind::Eval,
            K_FIND => Kind::Find,
            K_FOR | K_CASE | K_FUNCTION => Kind::Stop,
            K_SUDO => Kind::Wrapper(&SUDO),
            K_DOAS => Kind::Wrapper(&DOAS),
            K_PKEXEC => Kind::Wrapper(&PKEXEC),
            K_RUNUSER => Kind::Wrapper(&RUNUSER),
            K_ENV => Kind::Wrapper(&ENV),
            K_NICE => Kind::Wrapper(&NICE),
            K_IONICE => Kind::Wrapper(&IONICE),
            K_TIME => Kind::Wrapper(&TIME),
            K_TIMEOUT => Kind::Wrapper(&TIMEOUT),
            K_STDBUF => Kind::Wrapper(&STDBUF),
            K_CHROOT => Kind::Wrapper(&CHROOT),
            K_XARGS => Kind::Wrapper(&XARGS),
            K_WATCH => Kind::Wrapper(&WATCH),
            K_EXEC => Kind::Wrapper(&EXEC),
            K_FLOCK => Kind::Wrapper(&FLOCK),
            K_STRACE => Kind::Wrapper(&STRACE),
            K_NOHUP | K_SETSID | K_COMMAND | K_BUILTIN | K_BUSYBOX | K_UNBUFFER => {
                Kind::Wrapper(&NO_OPTIONS)
            }
            _ => Kind::Plain,
        }
    }

    /// Whether the word with [`key`] `word_key` is reserved, by the table.
    fn is_reserved(word_key: u128) -> bool {
        name_entry(word_key) & RESERVED != 0
    }

    fn is_reserved_by_search(word_key: u128) -> bool {
        matches!(
            word_key,
            K_BANG
                | K_OPEN_BRACE
                | K_CLOSE_BRACE
                | K_IF
                | K_THEN
                | K_ELSE
                | K_ELIF
                | K_FI
                | K_DO
                | K_DONE
                | K_WHILE
                | K_UNTIL
                | K_TIME
                | K_COPROC
        )
    }

    #[test]
    fn the_name_table_answers_as_the_matches_did() {
        let mut names: Vec<String> = [
            "sh",
            "bash",
            "busybox-sh",
            "powershell",
            "su",
            "eval",
            "find",
            "for",
            "case",
            "function",
            "sudo",
            "doas",
            "env",
            "nohup",
            "time",
            "timeout",
            "xargs",
            "watch",
            "exec",
            "strace",
            "unbuffer",
            "!",
            "{",
            "}",
            "if",
            "then",
            "fi",
            "done",
            "coproc",
            "ls",
            "rm",
            "date",
            "echo",
            "systemctl",
            "journalctl",
            "abcdefghijklmno",
            "abcdefghijklmnop",
            "",
            "SUDO",
            "sudo ",
            "timeouts",
        ]
        .iter()
        .map(|name| name.to_string())
        .collect();
        // Every name of one to three lower-case letters, digits or signs.
        let alphabet: Vec<char> = ('a'..='z')
            .chain('0'..='9')
            .chain("-_.!{}".chars())
            .collect();
        for a in &alphabet {
            names.push(a.to_string());
            for b in &alphabet {
                names.push(format!("{a}{b}"));
                for c in &alphabet {
                    names.push(format!("{a}{b}{c}"));
                }
            }
        }
        let mut keys: Vec<u128> = names.iter().map(|name| key(name.as_bytes())).collect();
        keys.extend(SPECIAL_NAMES.iter().map(|&(k, _)| k));
        keys.push(0);
        let mut special = 0;
        for k in keys {
            let (kind, reference) = (classify(k), classify_by_search(k));
            assert_eq!(format!("{kind:?}"), format!("{reference:?}"), "{k:#x}");
            assert_eq!(is_reserved(k), is_reserved_by_search(k), "{k:#x}");
            special += usize::from(!matches!(reference, Kind::Plain) || is_reserved(k));
        }
        assert!(special >= SPECIAL_NAMES.len(), "{special}");
        // Every special name has its own slot, and at most a quarter of the slots are taken.
        let taken = NAME_SLOTS.iter().filter(|(k, _)| *k != 0).count();
        assert_eq!(taken, SPECIAL_NAMES.len());
        assert!(taken * 4 <= NAME_SLOT_COUNT, "{taken}");
    }

    #[test]
    fn keys_are_the_same_at_run_and_compile_time() {
        let all = "0123456789abcdef";
        for len in 0..=all.len() {
            let name = &all.as_bytes()[..len];
            assert_eq!(key(name), const_key(name), "{len} bytes");
        }
        for name in ["sh", "busybox-sh", "é", "sh\0"] {
            assert_eq!(key(name.as_bytes()), const_key(name.as_bytes()), "{name}");
        }
        assert_eq!(key(b"0123456789abcdef"), 0, "too long to be special");
    }

    #[test]
    fn key_tests_agree_with_the_scans() {
        // Every byte value at every position of names of every key length, and the cases
        // around each test's edges.
        let mut words: Vec<Vec<u8>> = Vec::new();
        for len in 1..=17 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut w = vec![b'a'; len];
                    w[at] = b;
                    words.push(w);
                }
            }
        }
        for w in [
            "rm",
            "RM",
            "/bin/rm",
            "x.exe",
            "rm.exe",
            "RM.EXE",
            "a.exe.b",
            "C:\\x",
            "FOO=1",
            "_=x",
            "=",
            "ls",
            "abcdefghijklmno",
            "abcdefghijklmnop",
            "Z",
            "@",
            "[",
            "`",
            "{",
        ] {
            words.push(w.as_bytes().to_vec());
        }
        for bytes in words {
            let Ok(word) = std::str::from_utf8(&bytes) else {
                continue;
            };
            let k = key(word.as_bytes());
            if is_plain_name(k) {
                assert_eq!(name_range(word), (0, word.len(), false), "{word:?}");
            }
            if !may_be_assignment(k) {
                assert!(!is_assignment(word.as_bytes()), "{word:?}");
            }
            let plain = !word.is_empty()
                && word.len() < 16
                && !word
                    .bytes()
                    .any(|b| b == b'/' || b == b'\\' || b.is_ascii_uppercase())
                && !word.ends_with(".exe");
            assert_eq!(is_plain_name(k), plain, "{word:?}");
            assert_eq!(
                may_be_assignment(k),
                word.len() >= 16 || word.is_empty() || word.contains('='),
                "{word:?}"
            );
        }
    }

    #[test]
    fn names_are_normalised() {
        assert_eq!(command_name("/usr/bin/RM"), "rm");
        assert_eq!(command_name("C:\\Windows\\format.exe"), "format");
        assert_eq!(names("FOO=1 ! { rm x; }"), ["rm"]);
        assert_eq!(names("/usr/bin/SUDO RM -rf /"), ["sudo", "rm"]);
        assert_eq!(
            names("sh\0 -c reboot"),
            ["sh\0"],
            "a name with a NUL is not `sh`"
        );
    }
}
