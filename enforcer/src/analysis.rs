//! From shell text to the commands that would actually run.
//!
//! [`invocations`] reads a command line with [`crate::shell`], then looks through what hides the
//! real command: variable assignments and reserved words, absolute paths (`/bin/rm`), wrappers
//! (`sudo`, `env`, `nohup`, `xargs`, `timeout`, ...; each is kept as an invocation of its own so
//! that `sudo` itself can be flagged), shell payloads (`sh -c '...'`, `su -c`, `eval`,
//! `env -S`), and `find -exec`. Each resulting [`Invocation`] knows which commands feed it
//! through a pipe, so `curl ... | sh` is visible.

use crate::shell::{self, Redirect, Script, Warning, Word, MAX_DEPTH};
use std::ops::Range;

/// One command that would run, with its name normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// Lowercased base name (`/usr/bin/RM.exe` → `rm`).
    pub name: String,
    pub args: Vec<Word>,
    pub redirects: Vec<Redirect>,
    /// Byte span in the original argument, from the command word to its last argument.
    pub span: Range<usize>,
    /// Names of the commands before this one in its pipeline.
    pub upstream: Vec<String>,
    /// Flags as written: short letters, long names (lowercased, without dashes or `=value`).
    pub flags: FlagSet,
    /// The arguments joined by single spaces after quote removal: what `args` regexes see.
    pub args_text: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlagSet {
    pub short: Vec<char>,
    pub long: Vec<String>,
}

/// Everything found in one shell argument.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Analysis {
    pub invocations: Vec<Invocation>,
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
pub fn invocations(text: &str) -> Analysis {
    let script = shell::parse(text);
    let mut analysis = Analysis {
        invocations: Vec::new(),
        warnings: script.warnings.clone(),
    };
    collect(&script, 0, &mut analysis);
    analysis.warnings.sort();
    analysis.warnings.dedup();
    analysis
}

fn collect(script: &Script, depth: usize, out: &mut Analysis) {
    for pipeline in &script.pipelines {
        let mut upstream: Vec<String> = Vec::new();
        for command in &pipeline.commands {
            let last = unwrap(&command.words, &command.redirects, &upstream, depth, out);
            if let Some(name) = last {
                upstream.push(name);
            }
        }
    }
}

/// Emit the invocations in `words` (wrappers first); return the name of the innermost command.
fn unwrap(
    words: &[Word],
    redirects: &[Redirect],
    upstream: &[String],
    depth: usize,
    out: &mut Analysis,
) -> Option<String> {
    let mut rest = words;
    let mut innermost = None;
    loop {
        // Assignments (`FOO=bar cmd`) and reserved words (`! cmd`, `{ cmd; }`) are not commands.
        while let Some(first) = rest.first() {
            if is_assignment(&first.text) || RESERVED.contains(&first.text.as_str()) {
                rest = &rest[1..];
            } else {
                break;
            }
        }
        let Some(first) = rest.first() else {
            return innermost;
        };
        let name = command_name(&first.text);
        if name == "for" || name == "case" || name == "function" {
            return innermost;
        }
        let wrapper = WRAPPERS.iter().find(|w| w.name == name);
        let payload_flag = if SHELLS.contains(&name.as_str()) || name == "su" {
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
            let text: Vec<&str> = own[1..].iter().map(|w| w.text.as_str()).collect();
            nested(&text.join(" "), cover(&own[1..]), depth, out);
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

fn nested(text: &str, span: Range<usize>, depth: usize, out: &mut Analysis) {
    if depth + 1 > MAX_DEPTH {
        if !out.warnings.contains(&Warning::TooDeep) {
            out.warnings.push(Warning::TooDeep);
        }
        return;
    }
    let mut script = Script::default();
    shell::parse_into(text, 0, depth + 1, Some(span), &mut script);
    out.warnings.extend(script.warnings.iter().copied());
    collect(&script, depth + 1, out);
}

/// `find ... -exec CMD ARGS ;` runs CMD for each file.
fn find_exec(words: &[Word], upstream: &[String], depth: usize, out: &mut Analysis) {
    let mut i = 0;
    while i < words.len() {
        if matches!(
            words[i].text.as_str(),
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
fn wrapper_words(wrapper: &Wrapper, words: &[Word]) -> usize {
    let mut i = 0;
    let mut positionals = wrapper.positionals;
    while i < words.len() {
        let text = words[i].text.as_str();
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
fn find_payload(words: &[Word], is_su: bool) -> Option<usize> {
    for (i, word) in words.iter().enumerate() {
        let text = word.text.as_str();
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

fn push(
    out: &mut Analysis,
    name: &str,
    words: &[Word],
    redirects: &[Redirect],
    upstream: &[String],
) {
    let args = words[1..].to_vec();
    let args_text = args
        .iter()
        .map(|w| w.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    out.invocations.push(Invocation {
        name: name.to_string(),
        flags: flags(&args),
        args,
        redirects: redirects.to_vec(),
        span: cover(words),
        upstream: upstream.to_vec(),
        args_text,
    });
}

/// The span from the first word's start to the last word's end.
fn cover(words: &[Word]) -> Range<usize> {
    match (words.first(), words.last()) {
        (Some(first), Some(last)) => {
            first.span.start.min(last.span.start)..first.span.end.max(last.span.end)
        }
        _ => 0..0,
    }
}

impl FlagSet {
    fn add_long(&mut self, name: &str) {
        if !self.long.iter().any(|l| l.eq_ignore_ascii_case(name)) {
            self.long.push(name.to_ascii_lowercase());
        }
    }
}

fn flags(args: &[Word]) -> FlagSet {
    let mut set = FlagSet::default();
    for arg in args {
        let text = arg.text.as_str();
        if text == "--" {
            break;
        }
        if let Some(long) = text.strip_prefix("--") {
            let name = long.split('=').next().unwrap_or(long);
            if !name.is_empty() {
                set.add_long(name);
            }
        } else if let Some(short) = text.strip_prefix('-') {
            if short.is_empty() {
                continue;
            }
            // `-rf` is `-r -f`; `-Force` (PowerShell, find) is also a long name.
            let name = short.split('=').next().unwrap_or(short);
            for c in name.chars().filter(|c| c.is_ascii_alphanumeric()) {
                if !set.short.contains(&c) {
                    set.short.push(c);
                }
            }
            if name.len() > 1 {
                set.add_long(name);
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

/// `/usr/bin/RM.exe` → `rm`.
pub fn command_name(word: &str) -> String {
    let base = word.rsplit(['/', '\\']).next().unwrap_or(word);
    let lower = base.to_ascii_lowercase();
    match lower.strip_suffix(".exe") {
        Some(stem) if !stem.is_empty() => stem.to_string(),
        _ => lower,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<String> {
        invocations(text)
            .invocations
            .into_iter()
            .map(|i| i.name)
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
        assert!(flags.short.contains(&'r') && flags.short.contains(&'f'));
        assert!(
            flags.long.iter().any(|l| l == "no-preserve-root")
                && flags.long.iter().any(|l| l == "force")
        );
        assert!(!flags.short.contains(&'y'));
    }

    #[test]
    fn names_are_normalised() {
        assert_eq!(command_name("/usr/bin/RM"), "rm");
        assert_eq!(command_name("C:\\Windows\\format.exe"), "format");
        assert_eq!(names("FOO=1 ! { rm x; }"), ["rm"]);
    }
}
