//! From shell text to the commands that would actually run.
//!
//! [`invocations`] reads a command line with [`crate::shell`], then looks through what hides the
//! real command: variable assignments and reserved words, absolute paths (`/bin/rm`), wrappers
//! (`sudo`, `env`, `nohup`, `xargs`, `timeout`, ...; each is kept as an invocation of its own so
//! that `sudo` itself can be flagged), shell payloads (`sh -c '...'`, `su -c`, `eval`,
//! `env -S`), and `find -exec`. Each resulting [`Invocation`] knows which commands feed it
//! through a pipe, so `curl ... | sh` is visible.

use crate::shell::{self, Redirect, Script, Warning, Word, MAX_DEPTH};
use std::borrow::Cow;
use std::ops::Range;

/// One command that would run, with its name normalised. Text borrows from the analysed
/// argument wherever quote removal left it unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation<'a> {
    /// Lowercased base name (`/usr/bin/RM.exe` → `rm`).
    pub name: Cow<'a, str>,
    pub args: Vec<Word<'a>>,
    pub redirects: Vec<Redirect<'a>>,
    /// Byte span in the original argument, from the command word to its last argument.
    pub span: Range<usize>,
    /// Names of the commands before this one in its pipeline.
    pub upstream: Vec<Cow<'a, str>>,
    /// Flags as written: short letters, long names (lowercased, without dashes or `=value`).
    pub flags: FlagSet<'a>,
}

impl Invocation<'_> {
    /// The arguments joined by single spaces after quote removal: what `args` regexes see.
    pub fn args_text(&self) -> String {
        let mut text = String::new();
        self.write_args_text(&mut text);
        text
    }

    /// [`Invocation::args_text`] into `text` (cleared first), reusing its allocation.
    pub fn write_args_text(&self, text: &mut String) {
        text.clear();
        text.reserve(self.args.iter().map(|w| w.text.len() + 1).sum());
        for (i, arg) in self.args.iter().enumerate() {
            if i > 0 {
                text.push(' ');
            }
            text.push_str(&arg.text);
        }
    }
}

/// The flags of one invocation: short letters and digits as a bit set, long names as a list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlagSet<'a> {
    short: u64,
    pub long: Vec<Cow<'a, str>>,
}

impl FlagSet<'_> {
    /// Whether the short flag `c` (`r` of `-rf`) was given.
    pub fn has_short(&self, c: char) -> bool {
        short_bit(c).is_some_and(|bit| self.short & bit != 0)
    }

    /// The short flags given, in a fixed order (digits, upper case, lower case).
    pub fn shorts(&self) -> impl Iterator<Item = char> + '_ {
        let mut bits = self.short;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let index = bits.trailing_zeros();
            bits &= bits - 1;
            let c = match index {
                0..=9 => b'0' + index as u8,
                10..=35 => b'A' + (index - 10) as u8,
                _ => b'a' + (index - 36) as u8,
            };
            Some(char::from(c))
        })
    }

    /// Whether any short flag was given.
    pub fn any_short(&self) -> bool {
        self.short != 0
    }
}

/// The bit of an ASCII letter or digit in [`FlagSet`]'s short set.
fn short_bit(c: char) -> Option<u64> {
    let index = match c {
        '0'..='9' => c as u32 - '0' as u32,
        'A'..='Z' => 10 + c as u32 - 'A' as u32,
        'a'..='z' => 36 + c as u32 - 'a' as u32,
        _ => return None,
    };
    Some(1u64 << index)
}

/// Everything found in one shell argument.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Analysis<'a> {
    pub invocations: Vec<Invocation<'a>>,
    pub warnings: Vec<Warning>,
}

/// Shells whose `-c` argument is a command line of its own, and which run stdin when piped to.
const SHELLS: &[&str] = &[
    "sh",
    "bash",
    "dash",
    "zsh",
    "ksh",
    "mksh",
    "ash",
    "fish",
    "csh",
    "tcsh",
    "busybox-sh",
    "pwsh",
    "powershell",
];

/// Wrappers: they run the rest of their words as a command. Each entry lists the options that
/// take a separate value and how many leading positional words belong to the wrapper.
struct Wrapper {
    name: &'static str,
    takes_value: &'static [&'static str],
    positionals: usize,
}

const WRAPPERS: &[Wrapper] = &[
    Wrapper {
        name: "sudo",
        takes_value: &[
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
        ],
        positionals: 0,
    },
    Wrapper {
        name: "doas",
        takes_value: &["-u", "-C"],
        positionals: 0,
    },
    Wrapper {
        name: "pkexec",
        takes_value: &["--user"],
        positionals: 0,
    },
    Wrapper {
        name: "runuser",
        takes_value: &["-u", "-g", "-G", "--user", "--group", "--supp-group"],
        positionals: 0,
    },
    Wrapper {
        name: "env",
        takes_value: &["-u", "-C", "--unset", "--chdir", "-a", "--argv0"],
        positionals: 0,
    },
    Wrapper {
        name: "nohup",
        takes_value: &[],
        positionals: 0,
    },
    Wrapper {
        name: "nice",
        takes_value: &["-n", "--adjustment"],
        positionals: 0,
    },
    Wrapper {
        name: "ionice",
        takes_value: &["-c", "-n", "-p", "-P", "-u", "--class", "--classdata"],
        positionals: 0,
    },
    Wrapper {
        name: "time",
        takes_value: &["-f", "-o", "--format", "--output"],
        positionals: 0,
    },
    Wrapper {
        name: "timeout",
        takes_value: &["-s", "-k", "--signal", "--kill-after"],
        positionals: 1,
    },
    Wrapper {
        name: "stdbuf",
        takes_value: &["-i", "-o", "-e"],
        positionals: 0,
    },
    Wrapper {
        name: "setsid",
        takes_value: &[],
        positionals: 0,
    },
    Wrapper {
        name: "chroot",
        takes_value: &["--userspec", "--groups"],
        positionals: 1,
    },
    Wrapper {
        name: "xargs",
        takes_value: &[
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
        ],
        positionals: 0,
    },
    Wrapper {
        name: "watch",
        takes_value: &["-n", "-d", "--interval"],
        positionals: 0,
    },
    Wrapper {
        name: "exec",
        takes_value: &["-a"],
        positionals: 0,
    },
    Wrapper {
        name: "command",
        takes_value: &[],
        positionals: 0,
    },
    Wrapper {
        name: "builtin",
        takes_value: &[],
        positionals: 0,
    },
    Wrapper {
        name: "busybox",
        takes_value: &[],
        positionals: 0,
    },
    Wrapper {
        name: "flock",
        takes_value: &["-w", "-E", "--timeout", "--conflict-exit-code"],
        positionals: 1,
    },
    Wrapper {
        name: "strace",
        takes_value: &["-e", "-o", "-p", "-s", "-u"],
        positionals: 0,
    },
    Wrapper {
        name: "unbuffer",
        takes_value: &[],
        positionals: 0,
    },
];

/// Words that open shell syntax rather than name a command.
const RESERVED: &[&str] = &[
    "!", "{", "}", "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "time",
    "coproc",
];

/// Read a shell argument into the invocations it would cause.
pub fn invocations(text: &str) -> Analysis<'_> {
    let script = shell::parse(text);
    let commands: usize = script.pipelines.iter().map(|p| p.commands.len()).sum();
    let mut analysis = Analysis {
        invocations: Vec::with_capacity(commands + commands / 2),
        warnings: script.warnings.clone(),
    };
    collect(&script, 0, &mut analysis);
    analysis.warnings.sort();
    analysis.warnings.dedup();
    analysis
}

fn collect<'a>(script: &Script<'a>, depth: usize, out: &mut Analysis<'a>) {
    for pipeline in &script.pipelines {
        let mut upstream: Vec<Cow<'a, str>> = Vec::new();
        for command in &pipeline.commands {
            let last = unwrap(&command.words, &command.redirects, &upstream, depth, out);
            if let Some(name) = last {
                upstream.push(name);
            }
        }
    }
}

/// Emit the invocations in `words` (wrappers first); return the name of the innermost command.
fn unwrap<'a>(
    words: &[Word<'a>],
    redirects: &[Redirect<'a>],
    upstream: &[Cow<'a, str>],
    depth: usize,
    out: &mut Analysis<'a>,
) -> Option<Cow<'a, str>> {
    let mut rest = words;
    let mut innermost = None;
    loop {
        // Assignments (`FOO=bar cmd`) and reserved words (`! cmd`, `{ cmd; }`) are not commands.
        while let Some(first) = rest.first() {
            if is_assignment(&first.text) || RESERVED.contains(&first.text.as_ref()) {
                rest = &rest[1..];
            } else {
                break;
            }
        }
        let Some(first) = rest.first() else {
            return innermost;
        };
        let name = word_command_name(&first.text);
        if name == "for" || name == "case" || name == "function" {
            return innermost;
        }
        let wrapper = WRAPPERS.iter().find(|w| w.name == name);
        let payload_flag = if SHELLS.contains(&name.as_ref()) || name == "su" {
            find_payload(&rest[1..], name == "su")
        } else {
            None
        };
        let (own_len, next) = match wrapper {
            Some(wrapper) => {
                let consumed = wrapper_words(wrapper, &rest[1..]);
                (1 + consumed, Some(1 + consumed))
            }
            None => (rest.len(), None),
        };
        let own = &rest[..own_len];
        push(
            out,
            &name,
            own,
            if next.is_none() { redirects } else { &[] },
            upstream,
        );
        innermost = Some(name.clone());

        if let Some(index) = payload_flag {
            // `sh -c 'payload'`, `su -c 'payload'`: the payload is a command line of its own.
            if let Some(payload) = rest.get(1 + index) {
                nested(&payload.text, payload.span.clone(), depth, out);
            }
        }
        if name == "eval" && own.len() > 1 {
            let text: Vec<&str> = own[1..].iter().map(|w| w.text.as_ref()).collect();
            nested(&Cow::Owned(text.join(" ")), cover(&own[1..]), depth, out);
        }
        if name == "env" {
            // `env -S 'cmd args'` splits its string into a command.
            if let Some(pos) = own
                .iter()
                .position(|w| w.text == "-S" || w.text == "--split-string")
            {
                if let Some(payload) = rest.get(pos + 1) {
                    nested(&payload.text, payload.span.clone(), depth, out);
                }
            }
        }
        if name == "find" {
            find_exec(own, upstream, depth, out);
        }
        match next {
            Some(skip) if skip < rest.len() => rest = &rest[skip..],
            _ => return innermost,
        }
    }
}

/// Read a payload (`sh -c` text, `eval` words) as a command line of its own. Its spans are all
/// pinned to the payload's span in the original argument.
#[allow(
    clippy::ptr_arg,
    reason = "a borrowed payload keeps borrowing the argument ('a)"
)]
fn nested<'a>(text: &Cow<'a, str>, span: Range<usize>, depth: usize, out: &mut Analysis<'a>) {
    if depth + 1 > MAX_DEPTH {
        if !out.warnings.contains(&Warning::TooDeep) {
            out.warnings.push(Warning::TooDeep);
        }
        return;
    }
    let script = match text {
        Cow::Borrowed(text) => {
            let mut script = Script::default();
            shell::parse_into(text, 0, depth + 1, Some(span), &mut script);
            script
        }
        Cow::Owned(text) => {
            // Quote removal changed the payload: its words cannot borrow the argument.
            let mut script = Script::default();
            shell::parse_into(text, 0, depth + 1, Some(span), &mut script);
            script.into_owned()
        }
    };
    out.warnings.extend(script.warnings.iter().copied());
    collect(&script, depth + 1, out);
}

/// `find ... -exec CMD ARGS ;` runs CMD for each file.
fn find_exec<'a>(
    words: &[Word<'a>],
    upstream: &[Cow<'a, str>],
    depth: usize,
    out: &mut Analysis<'a>,
) {
    let mut i = 0;
    while i < words.len() {
        if matches!(
            words[i].text.as_ref(),
            "-exec" | "-execdir" | "-ok" | "-okdir"
        ) {
            let start = i + 1;
            let end = words[start..]
                .iter()
                .position(|w| w.text == ";" || w.text == "+")
                .map_or(words.len(), |p| start + p);
            if start < end {
                unwrap(&words[start..end], &[], upstream, depth, out);
            }
            i = end;
        }
        i += 1;
    }
}

/// How many words after a wrapper's name are its own (options, their values, positionals).
fn wrapper_words(wrapper: &Wrapper, words: &[Word<'_>]) -> usize {
    let mut i = 0;
    let mut positionals = wrapper.positionals;
    while i < words.len() {
        let text = words[i].text.as_ref();
        if text == "--" {
            return i + 1;
        }
        if wrapper.name == "env" && is_assignment(text) {
            i += 1;
        } else if text.starts_with('-') && text.len() > 1 {
            // `-u root` takes the next word; `-uroot` and `--user=root` do not.
            if wrapper.takes_value.contains(&text) {
                i += 2;
            } else {
                i += 1;
            }
        } else if positionals > 0 {
            positionals -= 1;
            i += 1;
        } else {
            return i;
        }
    }
    words.len()
}

/// Position (in `words`) of the payload after `-c` in a shell's options, if any.
fn find_payload(words: &[Word<'_>], is_su: bool) -> Option<usize> {
    for (i, word) in words.iter().enumerate() {
        let text = word.text.as_ref();
        if text == "--command" && is_su {
            return Some(i + 1);
        }
        if text == "-Command" || text.eq_ignore_ascii_case("-command") {
            return Some(i + 1);
        }
        if text.starts_with('-') && !text.starts_with("--") && text[1..].contains('c') {
            return Some(i + 1);
        }
        if !text.starts_with('-') && !is_su {
            // `bash script.sh`: a file, not a command line.
            return None;
        }
    }
    None
}

#[allow(
    clippy::ptr_arg,
    reason = "cloning a borrowed Cow keeps the borrow; &str would not"
)]
fn push<'a>(
    out: &mut Analysis<'a>,
    name: &Cow<'a, str>,
    words: &[Word<'a>],
    redirects: &[Redirect<'a>],
    upstream: &[Cow<'a, str>],
) {
    let args = words[1..].to_vec();
    out.invocations.push(Invocation {
        name: name.clone(),
        flags: flags(&args),
        args,
        redirects: redirects.to_vec(),
        span: cover(words),
        upstream: upstream.to_vec(),
    });
}

/// The span from the first word's start to the last word's end.
fn cover(words: &[Word<'_>]) -> Range<usize> {
    match (words.first(), words.last()) {
        (Some(first), Some(last)) => {
            first.span.start.min(last.span.start)..first.span.end.max(last.span.end)
        }
        _ => 0..0,
    }
}

impl<'a> FlagSet<'a> {
    /// Add the long flag at `range` of `word` (lowercased; borrowed when it already is).
    #[allow(clippy::ptr_arg, reason = "a borrowed word lends its flag name ('a)")]
    fn add_long(&mut self, word: &Cow<'a, str>, range: Range<usize>) {
        let name = &word[range.clone()];
        if self.long.iter().any(|l| l.eq_ignore_ascii_case(name)) {
            return;
        }
        let lowered = match word {
            Cow::Borrowed(text) if !name.bytes().any(|b| b.is_ascii_uppercase()) => {
                Cow::Borrowed(&text[range])
            }
            _ => Cow::Owned(name.to_ascii_lowercase()),
        };
        self.long.push(lowered);
    }
}

fn flags<'a>(args: &[Word<'a>]) -> FlagSet<'a> {
    let mut set = FlagSet::default();
    for arg in args {
        let text = arg.text.as_ref();
        if text == "--" {
            break;
        }
        let dashes = if text.starts_with("--") {
            2
        } else if text.starts_with('-') {
            1
        } else {
            continue;
        };
        let end = text.find('=').unwrap_or(text.len()).max(dashes);
        let name = &text[dashes..end];
        if name.is_empty() {
            continue;
        }
        if dashes == 2 {
            set.add_long(&arg.text, dashes..end);
        } else {
            // `-rf` is `-r -f`; `-Force` (PowerShell, find) is also a long name.
            for c in name.chars() {
                if let Some(bit) = short_bit(c) {
                    set.short |= bit;
                }
            }
            if name.len() > 1 {
                set.add_long(&arg.text, dashes..end);
            }
        }
    }
    set
}

fn is_assignment(text: &str) -> bool {
    match text.split_once('=') {
        Some((name, _)) => {
            let mut chars = name.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    }
}

/// `/usr/bin/RM.exe` → `rm`. Borrows the word when it already is its own name.
pub fn command_name(word: &str) -> Cow<'_, str> {
    let base = word.rsplit(['/', '\\']).next().unwrap_or(word);
    let has_exe = base.len() > 4
        && base
            .get(base.len() - 4..)
            .is_some_and(|ext| ext.eq_ignore_ascii_case(".exe"));
    let stem = if has_exe {
        &base[..base.len() - 4]
    } else {
        base
    };
    if stem.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(stem.to_ascii_lowercase())
    } else {
        Cow::Borrowed(stem)
    }
}

/// [`command_name`] of a word, keeping the borrow of the analysed text when there is one.
fn word_command_name<'a>(word: &Cow<'a, str>) -> Cow<'a, str> {
    match word {
        Cow::Borrowed(text) => command_name(text),
        Cow::Owned(text) => Cow::Owned(command_name(text).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<String> {
        invocations(text)
            .invocations
            .into_iter()
            .map(|i| i.name.into_owned())
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
    }

    #[test]
    fn payload_spans_cover_the_payload_word() {
        let text = "bash -c 'rm -rf /'";
        let analysis = invocations(text);
        let rm = &analysis.invocations[1];
        assert_eq!(&text[rm.span.clone()], "'rm -rf /'");
    }

    #[test]
    fn pipelines_know_their_upstream() {
        let analysis = invocations("curl -fsSL https://x | sudo bash");
        let bash = analysis.invocations.last().expect("bash");
        assert_eq!(bash.name, "bash");
        assert_eq!(bash.upstream, ["curl"]);
    }

    #[test]
    fn flags_are_split_combined_and_long() {
        let analysis = invocations("rm -r -f --no-preserve-root -Force x -- -y");
        let flags = &analysis.invocations[0].flags;
        assert!(flags.has_short('r') && flags.has_short('f'));
        assert!(
            flags.long.iter().any(|l| l == "no-preserve-root")
                && flags.long.iter().any(|l| l == "force")
        );
        assert!(!flags.has_short('y'));
    }

    #[test]
    fn names_are_normalised() {
        assert_eq!(command_name("/usr/bin/RM"), "rm");
        assert_eq!(command_name("C:\\Windows\\format.exe"), "format");
        assert_eq!(names("FOO=1 ! { rm x; }"), ["rm"]);
    }
}
