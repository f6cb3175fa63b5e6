//! What commands do: the command catalogue (`policies/commands/*.toml`) and the classification
//! of one invocation by it.
//!
//! The catalogue is data. For each command it says what an invocation does (`read-only`, or an
//! effect with a [`Category`]), and where it matters per subcommand, per flag or per argument
//! pattern; which options and operands name paths the command writes; and, through the verbs
//! file, how to read a subcommand it does not list. [`Catalogue::classify`] applies it to one
//! [`Invocation`] and says, in a reviewer's words, what the invocation does and what decided
//! it. Anything the catalogue cannot tell is marked *unknown*, so that the policy can ask.
//!
//! `policies/commands/README.md` describes the file format.

use crate::analysis::Invocation;
use crate::category::Category;
use crate::error::{toml_error, PolicyError};
use crate::fnv::Fnv;
use regex::{Regex, RegexSet};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasherDefault;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

/// The catalogue files built into the enforcer: (file name, text).
pub const BUILTIN_FILES: &[(&str, &str)] = &[
    (
        "policies/commands/verbs.toml",
        include_str!("../../policies/commands/verbs.toml"),
    ),
    (
        "policies/commands/shell.toml",
        include_str!("../../policies/commands/shell.toml"),
    ),
    (
        "policies/commands/core.toml",
        include_str!("../../policies/commands/core.toml"),
    ),
    (
        "policies/commands/system.toml",
        include_str!("../../policies/commands/system.toml"),
    ),
    (
        "policies/commands/dev.toml",
        include_str!("../../policies/commands/dev.toml"),
    ),
    (
        "policies/commands/cloud.toml",
        include_str!("../../policies/commands/cloud.toml"),
    ),
    (
        "policies/commands/services.toml",
        include_str!("../../policies/commands/services.toml"),
    ),
];

/// Paths under which writing is no effect unless the policy says otherwise.
pub const DEFAULT_SCRATCH: &[&str] = &["/tmp", "/var/tmp"];

/// What one invocation does, as the catalogue tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classification {
    /// The argument the command was found in (`command`, or `command[2]`).
    pub argument: String,
    /// Byte span of the invocation in that argument.
    pub span: Range<usize>,
    /// The command as the catalogue knows it: `systemctl restart`, `kubectl rollout undo`.
    pub command: String,
    /// Nothing here means read-only (unless `unknown`).
    pub effects: Vec<Effect>,
    /// Paths it writes outside scratch.
    #[serde(default)]
    pub writes: Vec<String>,
    /// Paths it writes or deletes under the scratch paths (no effect, shown for the record).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scratch: Vec<String>,
    /// The catalogue does not know what it does (an unknown command or subcommand).
    #[serde(default)]
    pub unknown: bool,
    /// What decided: `catalogue: systemctl restart`, `verb: delete`, `redirection`, ...
    pub decided_by: String,
}

impl Classification {
    /// Read-only and known.
    pub fn is_read_only(&self) -> bool {
        self.effects.is_empty() && !self.unknown
    }
}

/// One effect, with the words that explain it ("writes /etc/hosts").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effect {
    pub category: Category,
    pub why: String,
}

// ---------------------------------------------------------------------------------------------
// The file format (see policies/commands/README.md).

/// The catalogue tables of a file: the built-in files, or a policy that extends them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CatalogueFile {
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub commands: BTreeMap<String, EntryFile>,
    #[serde(default)]
    pub verbs: Option<VerbsFile>,
    #[serde(default)]
    pub environment: Option<EnvironmentFile>,
    #[serde(default)]
    pub paths: Option<PathsFile>,
    /// Named lists of rules that entries share (`uses = ["sql"]`).
    #[serde(default)]
    pub rulesets: BTreeMap<String, Vec<RuleFile>>,
}

/// How commands treat the paths they are given.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PathsFile {
    /// Commands that look at paths without reading what is in them (`ls`, `stat`): naming a
    /// secret's path is no read of it.
    #[serde(default)]
    metadata_only: Vec<String>,
}

/// Environment variables that make programs run other code (`LESSOPEN`, `LD_PRELOAD`, ...).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnvironmentFile {
    #[serde(default)]
    runs_code: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EntryFile {
    #[serde(default)]
    description: String,
    effect: Option<String>,
    why: Option<String>,
    #[serde(default)]
    rules: Vec<RuleFile>,
    writes: Option<String>,
    #[serde(default)]
    output_flags: Vec<String>,
    #[serde(default)]
    output_keys: Vec<String>,
    script_first: Option<Vec<String>>,
    #[serde(default)]
    value_flags: Vec<String>,
    #[serde(default)]
    subcommands: BTreeMap<String, SubFile>,
    verb_category: Option<String>,
    verb_depth: Option<usize>,
    same_as: Option<String>,
    #[serde(default)]
    dry_run: Vec<String>,
    alone: Option<String>,
    /// Rule sets whose rules follow the entry's own.
    #[serde(default)]
    uses: Vec<String>,
    deletes: Option<String>,
    /// A shell: when its `-c` payload was read, the payload is judged and the shell is not.
    #[serde(default)]
    payload: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum SubFile {
    Effect(String),
    Entry(Box<EntryFile>),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleFile {
    #[serde(default)]
    flags: Vec<String>,
    args: Option<String>,
    effect: Option<String>,
    writes: Option<String>,
    why: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerbsFile {
    #[serde(default)]
    change: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    read: Words,
    #[serde(default)]
    secret: Words,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Words {
    #[serde(default)]
    words: Vec<String>,
}

impl Words {
    fn lowercased(&self) -> BTreeSet<String> {
        self.words.iter().map(|w| w.to_ascii_lowercase()).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The compiled catalogue.

/// An effect as the catalogue states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stated {
    ReadOnly,
    Unknown,
    Is(Category),
}

/// Which operands a command writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writes {
    Operands,
    LastOperand,
    FlagValue,
}

#[derive(Debug, Clone)]
struct Rule {
    flags: Vec<String>,
    args: Option<LazyRegex>,
    effect: Option<Stated>,
    writes: Option<Writes>,
    why: Option<String>,
}

#[derive(Debug, Clone)]
struct Entry {
    /// `kubectl rollout restart`.
    path: String,
    effect: Stated,
    why: Option<String>,
    rules: Vec<Rule>,
    writes: Option<Writes>,
    /// Operands the command deletes (`rm`): outside scratch, `destructive`.
    deletes: Option<Writes>,
    output_flags: Vec<String>,
    output_keys: Vec<String>,
    script_first: Option<Vec<String>>,
    subcommands: BTreeMap<String, Entry>,
    verb_category: Option<Category>,
    verb_depth: usize,
    /// Another command this one is (`podman` is `docker`): the rest is classified as that.
    same_as: Option<String>,
    /// Flags that make the whole invocation a dry run (read-only).
    dry_run: Vec<String>,
    /// For a wrapper: the effect when it has no command to run (`env` alone).
    alone: Option<Stated>,
    /// Looks at paths without reading them (`ls`): a secret's path is no read (`[paths]`).
    metadata_only: bool,
    /// A shell whose read `-c` payload is judged instead of it.
    payload: bool,
    /// Nothing but an effect: no rules, subcommands, writes or other options to look at.
    plain: bool,
    /// `catalogue: PATH`, what decided a plain invocation.
    decided: String,
    /// Options that take the next word, of this entry and every subcommand below it (top level
    /// only; empty below).
    value_flags: BTreeSet<String>,
}

/// A regex checked when the catalogue loads and compiled when a command first needs it: the
/// catalogue has well over a thousand, and most never meet a command that would run them.
#[derive(Debug, Clone)]
struct LazyRegex {
    source: String,
    compiled: Arc<OnceLock<Option<Regex>>>,
}

impl LazyRegex {
    /// Checked now (the syntax the regex crate accepts), compiled later.
    fn new(source: &str) -> Result<LazyRegex, Box<regex_syntax::Error>> {
        regex_syntax::Parser::new()
            .parse(source)
            .map_err(Box::new)?;
        Ok(LazyRegex {
            source: source.to_string(),
            compiled: Arc::new(OnceLock::new()),
        })
    }

    /// Whether it matches; `None` when the regex could not be compiled (too large), which the
    /// caller resolves towards asking.
    fn is_match(&self, text: &str) -> Option<bool> {
        self.compiled
            .get_or_init(|| Regex::new(&self.source).ok())
            .as_ref()
            .map(|re| re.is_match(text))
    }
}

/// Verbs that decide a subcommand the catalogue does not list.
#[derive(Debug, Clone, Default)]
struct Verbs {
    change: HashMap<String, Category>,
    read: BTreeSet<String>,
    secret: BTreeSet<String>,
}

/// The whole catalogue: entries by command name, the verbs, and the sensitive paths.
#[derive(Debug, Clone)]
pub struct Catalogue {
    /// By command name (FNV: the keys are the catalogue's own, see `crate::fnv::Fnv`).
    commands: HashMap<String, Entry, BuildHasherDefault<Fnv>>,
    code_variables: BTreeSet<String>,
    verbs: Verbs,
    sensitive: RegexSet,
    /// [`SENSITIVE_NEEDLES`] as one literal search.
    sensitive_needles: Regex,
    sensitive_what: Vec<&'static str>,
    scratch: Vec<String>,
}

/// Files whose reading is the secret's effect, whatever the program: (regex, what it is).
const SENSITIVE: &[(&str, &str)] = &[
    (
        r"^(.*/)?etc/(g?shadow|security/opasswd)-?$",
        "the password hashes",
    ),
    (r"^(.*/)?etc/sudoers(\.d(/.*)?)?$", "the sudo rules"),
    (
        r"(^|/)\.ssh/(id_[a-z0-9_]+|[^/]*_key|identity)$",
        "a private SSH key",
    ),
    (
        r"(^|/)\.(ssh|gnupg|aws|kube|password-store)(/x)?$",
        "a directory of keys or credentials",
    ),
    (
        r"^(.*/)?etc/ssh/ssh_host_[a-z0-9_]+_key$",
        "a host's private SSH key",
    ),
    (
        r"\.(pem|key|p12|pfx|jks|keystore|kdbx|ppk|asc|gpg)$",
        "a key or key store",
    ),
    (
        r"(^|/)\.env(\.[A-Za-z0-9_.-]+)?$",
        "an environment file (secrets)",
    ),
    (
        r"(^|/)proc/([0-9]+|self|\*|\$[A-Za-z_]+)/(environ|mem|maps)$",
        "a process's environment or memory",
    ),
    (r"(^|/)\.aws/(credentials|config)$", "cloud credentials"),
    (r"(^|/)\.config/gcloud(/|$)", "cloud credentials"),
    (r"(^|/)\.azure(/|$)", "cloud credentials"),
    (r"(^|/)\.kube/config$", "cluster credentials"),
    (
        r"^(.*/)?etc/kubernetes/(admin|kubelet|controller-manager|scheduler)\.conf$",
        "cluster credentials",
    ),
    (r"(^|/)\.docker/config\.json$", "registry credentials"),
    (
        r"(^|/)\.(netrc|pgpass|my\.cnf|git-credentials|npmrc|pypirc|vault-token)$",
        "stored credentials",
    ),
    (r"(^|/)\.gnupg(/|$)", "the GnuPG keyring"),
    (r"(^|/)\.password-store(/|$)", "a password store"),
    (r"^(.*/)?etc/ssl/private(/|$)", "TLS private keys"),
    (
        r"^(.*/)?etc/letsencrypt/(live|archive|keys)(/|$)",
        "TLS private keys",
    ),
    (r"^(.*/)?(run|var/run)/secrets(/|$)", "mounted secrets"),
    (
        r"(^|/)(credentials|secrets?)\.(json|ya?ml|toml|txt|ini)$",
        "a credentials file",
    ),
    (
        r"(^|/)\.(bash|zsh|python|mysql|psql)_history$",
        "a shell or client history",
    ),
    (
        r"^(.*/)?var/lib/sss/(db|secrets)(/|$)",
        "cached credentials",
    ),
    (
        r"^(.*/)?etc/(krb5\.keytab|.*\.keytab)$",
        "a Kerberos keytab",
    ),
];

/// Words of which every [`SENSITIVE`] path has at least one (a test checks it): a path with
/// none of them is no secret, and only the few that have one are matched against the set.
const SENSITIVE_NEEDLES: &[&str] = &[
    "shadow",
    "opasswd",
    "sudoers",
    ".ssh",
    "identity",
    "ssh_host_",
    ".pem",
    ".key",
    ".p12",
    ".pfx",
    ".jks",
    ".keystore",
    ".kdbx",
    ".ppk",
    ".asc",
    ".gpg",
    ".env",
    "environ",
    "/mem",
    "/maps",
    ".aws",
    "gcloud",
    ".azure",
    ".kube",
    "kubernetes/",
    ".docker/",
    ".netrc",
    ".pgpass",
    ".my.cnf",
    ".git-credentials",
    ".npmrc",
    ".pypirc",
    ".vault-token",
    ".gnupg",
    ".password-store",
    "ssl/private",
    "letsencrypt/",
    "secret",
    "credentials",
    "_history",
    "sss/",
    "keytab",
];

/// The built-in catalogue, parsed once.
fn builtin() -> Result<&'static CatalogueFile, PolicyError> {
    static BUILTIN: OnceLock<Result<CatalogueFile, PolicyError>> = OnceLock::new();
    BUILTIN
        .get_or_init(|| {
            let mut all = CatalogueFile::default();
            let mut defined: BTreeMap<String, &str> = BTreeMap::new();
            for &(file, text) in BUILTIN_FILES {
                let part: CatalogueFile =
                    toml::from_str(text).map_err(|e| toml_error(file, text, &e))?;
                let names = part
                    .groups
                    .values()
                    .flatten()
                    .chain(part.commands.keys())
                    .cloned()
                    .collect::<Vec<_>>();
                for name in names {
                    if let Some(first) = defined.insert(name.clone(), file) {
                        return Err(PolicyError {
                            file: file.to_string(),
                            line: 0,
                            column: 0,
                            field: Some(format!("commands.{name}")),
                            message: format!("`{name}` is already defined in {first}"),
                        });
                    }
                }
                all.merge(part);
            }
            Ok(all)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// SHA-256 of the built-in catalogue's files, part of every policy's hash.
pub(crate) fn builtin_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let mut all = String::new();
        for (file, text) in BUILTIN_FILES {
            all.push_str(file);
            all.push('\n');
            all.push_str(text);
        }
        crate::sha256_hex(all.as_bytes())
    })
}

impl CatalogueFile {
    /// Add `other`'s tables, replacing entries of the same name.
    fn merge(&mut self, other: CatalogueFile) {
        for (effect, names) in other.groups {
            for name in &names {
                self.commands.remove(name);
                for list in self.groups.values_mut() {
                    list.retain(|n| n != name);
                }
            }
            self.groups.entry(effect).or_default().extend(names);
        }
        for (name, entry) in other.commands {
            for list in self.groups.values_mut() {
                list.retain(|n| n != &name);
            }
            self.commands.insert(name, entry);
        }
        if let Some(verbs) = other.verbs {
            let mine = self.verbs.get_or_insert_with(VerbsFile::default);
            for (category, words) in verbs.change {
                mine.change.entry(category).or_default().extend(words);
            }
            mine.read.words.extend(verbs.read.words);
            mine.secret.words.extend(verbs.secret.words);
        }
        self.rulesets.extend(other.rulesets);
        if let Some(paths) = other.paths {
            self.paths
                .get_or_insert_with(PathsFile::default)
                .metadata_only
                .extend(paths.metadata_only);
        }
        if let Some(environment) = other.environment {
            self.environment
                .get_or_insert_with(EnvironmentFile::default)
                .runs_code
                .extend(environment.runs_code);
        }
    }
}

/// Where a catalogue error is reported.
struct Place<'a> {
    file: &'a str,
    rulesets: &'a BTreeMap<String, Vec<RuleFile>>,
}

impl Place<'_> {
    fn err(&self, field: String, message: impl Into<String>) -> PolicyError {
        PolicyError {
            file: self.file.to_string(),
            line: 0,
            column: 0,
            field: Some(field),
            message: message.into(),
        }
    }

    fn stated(&self, text: &str, field: &str) -> Result<Stated, PolicyError> {
        match text {
            "read-only" => Ok(Stated::ReadOnly),
            "unknown" => Ok(Stated::Unknown),
            other => category(other).map(Stated::Is).ok_or_else(|| {
                self.err(
                    field.to_string(),
                    format!("unknown effect `{other}`: read-only, unknown or a category (destructive, writes-files, system-config, ...)"),
                )
            }),
        }
    }

    fn writes(&self, text: &str, field: &str, in_rule: bool) -> Result<Writes, PolicyError> {
        match text {
            "operands" => Ok(Writes::Operands),
            "last-operand" => Ok(Writes::LastOperand),
            "flag-value" if in_rule => Ok(Writes::FlagValue),
            other => Err(self.err(
                field.to_string(),
                format!(
                    "unknown `writes` value `{other}`: operands, last-operand{}",
                    if in_rule { " or flag-value" } else { "" }
                ),
            )),
        }
    }

    fn entry(
        &self,
        path: &str,
        field: &str,
        file: &EntryFile,
        value_flags: &mut BTreeSet<String>,
    ) -> Result<Entry, PolicyError> {
        let effect = match &file.effect {
            Some(text) => self.stated(text, &format!("{field}.effect"))?,
            None => Stated::ReadOnly,
        };
        let mut all_rules: Vec<(String, &RuleFile)> = file
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| (format!("{field}.rules[{i}]"), rule))
            .collect();
        for name in &file.uses {
            let set = self.rulesets.get(name).ok_or_else(|| {
                self.err(
                    format!("{field}.uses"),
                    format!("no rule set `{name}` (add a [rulesets] entry)"),
                )
            })?;
            all_rules.extend(
                set.iter()
                    .enumerate()
                    .map(|(i, rule)| (format!("rulesets.{name}[{i}]"), rule)),
            );
        }
        let mut rules = Vec::with_capacity(all_rules.len());
        for (at, rule) in all_rules {
            if rule.flags.is_empty() && rule.args.is_none() {
                return Err(self.err(at, "a rule needs `flags` or `args`"));
            }
            if rule.effect.is_none() && rule.writes.is_none() {
                return Err(self.err(at, "a rule needs an `effect` or `writes`"));
            }
            let args = match &rule.args {
                Some(re) => Some(LazyRegex::new(re).map_err(|e| {
                    self.err(
                        format!("{at}.args"),
                        format!("invalid regular expression: {e}"),
                    )
                })?),
                None => None,
            };
            let writes = match &rule.writes {
                Some(w) => Some(self.writes(w, &format!("{at}.writes"), true)?),
                None => None,
            };
            if writes == Some(Writes::FlagValue) && rule.flags.is_empty() {
                return Err(self.err(at, "`writes = \"flag-value\"` needs `flags`"));
            }
            let effect = match &rule.effect {
                Some(e) => Some(self.stated(e, &format!("{at}.effect"))?),
                None => None,
            };
            rules.push(Rule {
                flags: rule.flags.iter().map(|f| dashless(f)).collect(),
                args,
                effect,
                writes,
                why: rule.why.clone(),
            });
        }
        let writes = match &file.writes {
            Some(w) => Some(self.writes(w, &format!("{field}.writes"), false)?),
            None => None,
        };
        let deletes = match &file.deletes {
            Some(w) => Some(self.writes(w, &format!("{field}.deletes"), false)?),
            None => None,
        };
        let verb_category = match &file.verb_category {
            Some(text) => Some(category(text).ok_or_else(|| {
                self.err(
                    format!("{field}.verb_category"),
                    format!("unknown category `{text}`"),
                )
            })?),
            None => None,
        };
        value_flags.extend(file.value_flags.iter().map(|f| dashless(f)));
        value_flags.extend(file.output_flags.iter().map(|f| dashless(f)));
        let mut subcommands = BTreeMap::new();
        for (name, sub) in &file.subcommands {
            let sub_path = format!("{path} {name}");
            let sub_field = format!("{field}.subcommands.{name}");
            let entry = match sub {
                SubFile::Effect(text) => Entry::plain(sub_path, self.stated(text, &sub_field)?),
                SubFile::Entry(inner) => self.entry(&sub_path, &sub_field, inner, value_flags)?,
            };
            subcommands.insert(name.to_ascii_lowercase(), entry);
        }
        Ok(Entry {
            path: path.to_string(),
            effect,
            why: file.why.clone(),
            rules,
            writes,
            deletes,
            output_flags: file.output_flags.iter().map(|f| dashless(f)).collect(),
            output_keys: file.output_keys.clone(),
            script_first: file
                .script_first
                .as_ref()
                .map(|flags| flags.iter().map(|f| dashless(f)).collect()),
            subcommands,
            verb_category,
            verb_depth: file.verb_depth.unwrap_or(1).clamp(1, 4),
            same_as: file.same_as.as_ref().map(|s| s.to_ascii_lowercase()),
            dry_run: file.dry_run.iter().map(|f| dashless(f)).collect(),
            alone: match &file.alone {
                Some(text) => Some(self.stated(text, &format!("{field}.alone"))?),
                None => None,
            },
            metadata_only: false,
            payload: file.payload,
            plain: false,
            decided: format!("catalogue: {path}"),
            value_flags: BTreeSet::new(),
        }
        .with_plainness())
    }
}

impl Entry {
    /// Mark the entry plain when an effect is all it has.
    fn with_plainness(mut self) -> Entry {
        self.plain = self.rules.is_empty()
            && self.subcommands.is_empty()
            && self.writes.is_none()
            && self.deletes.is_none()
            && self.output_flags.is_empty()
            && self.output_keys.is_empty()
            && self.same_as.is_none()
            && self.dry_run.is_empty()
            && self.alone.is_none()
            && !self.payload;
        self
    }

    fn plain(path: String, effect: Stated) -> Entry {
        Entry {
            effect,
            why: None,
            rules: Vec::new(),
            writes: None,
            deletes: None,
            output_flags: Vec::new(),
            output_keys: Vec::new(),
            script_first: None,
            subcommands: BTreeMap::new(),
            verb_category: None,
            verb_depth: 1,
            same_as: None,
            dry_run: Vec::new(),
            alone: None,
            metadata_only: false,
            payload: false,
            plain: true,
            decided: format!("catalogue: {path}"),
            path,
            value_flags: BTreeSet::new(),
        }
    }
}

fn dashless(flag: &str) -> String {
    flag.trim_start_matches('-').to_string()
}

/// A category by its name in a catalogue.
fn category(text: &str) -> Option<Category> {
    serde_json::from_value(serde_json::Value::String(text.to_string())).ok()
}

impl Catalogue {
    /// The catalogue a policy uses: the built-in one (compiled once per process) or, when the
    /// policy adds entries or names other scratch paths, one of its own.
    pub(crate) fn for_policy(
        file: &str,
        extension: Option<CatalogueFile>,
        scratch: &[String],
    ) -> Result<Arc<Catalogue>, PolicyError> {
        let default_scratch = scratch.is_empty()
            || scratch
                .iter()
                .map(|p| p.trim_end_matches('/'))
                .eq(DEFAULT_SCRATCH.iter().copied());
        if extension.is_some() || !default_scratch {
            return Catalogue::compile(file, extension, scratch).map(Arc::new);
        }
        static BUILTIN: OnceLock<Result<Arc<Catalogue>, PolicyError>> = OnceLock::new();
        BUILTIN
            .get_or_init(|| Catalogue::compile(file, None, &[]).map(Arc::new))
            .clone()
    }

    /// The built-in catalogue, extended by a policy's own tables and with its scratch paths.
    pub(crate) fn compile(
        file: &str,
        extension: Option<CatalogueFile>,
        scratch: &[String],
    ) -> Result<Catalogue, PolicyError> {
        let mut all = builtin()?.clone();
        let place_file = match &extension {
            Some(_) => file,
            None => "policies/commands",
        };
        if let Some(extension) = extension {
            all.merge(extension);
        }
        let place = Place {
            file: place_file,
            rulesets: &all.rulesets,
        };
        let mut commands: HashMap<String, Entry, BuildHasherDefault<Fnv>> = HashMap::default();
        for (effect, names) in &all.groups {
            let stated = place.stated(effect, &format!("groups.{effect}"))?;
            for name in names {
                commands.insert(
                    name.to_ascii_lowercase(),
                    Entry::plain(name.clone(), stated),
                );
            }
        }
        for (name, file) in &all.commands {
            let mut value_flags = BTreeSet::new();
            let mut entry =
                place.entry(name, &format!("commands.{name}"), file, &mut value_flags)?;
            entry.value_flags = value_flags;
            commands.insert(name.to_ascii_lowercase(), entry);
        }
        for entry in commands.values() {
            check_same_as(&place, entry, &commands)?;
        }
        let mut verbs = Verbs::default();
        if let Some(file) = &all.verbs {
            for (name, words) in &file.change {
                let category = category(name).ok_or_else(|| {
                    place.err(
                        format!("verbs.change.{name}"),
                        format!("unknown category `{name}`"),
                    )
                })?;
                for word in words {
                    verbs.change.insert(word.to_ascii_lowercase(), category);
                }
            }
            verbs.read = file.read.lowercased();
            verbs.secret = file.secret.lowercased();
        }
        let sensitive = RegexSet::new(SENSITIVE.iter().map(|(re, _)| *re))
            .map_err(|e| place.err("sensitive".into(), e.to_string()))?;
        let sensitive_needles = Regex::new(
            &SENSITIVE_NEEDLES
                .iter()
                .map(|n| regex::escape(n))
                .collect::<Vec<_>>()
                .join("|"),
        )
        .map_err(|e| place.err("sensitive".into(), e.to_string()))?;
        let mut scratch: Vec<String> = scratch
            .iter()
            .map(|p| p.trim_end_matches('/').to_string())
            .filter(|p| !p.is_empty())
            .collect();
        if scratch.is_empty() {
            scratch = DEFAULT_SCRATCH.iter().map(|s| s.to_string()).collect();
        }
        let code_variables = all
            .environment
            .iter()
            .flat_map(|e| e.runs_code.iter().cloned())
            .collect();
        for name in all.paths.iter().flat_map(|p| &p.metadata_only) {
            if let Some(entry) = commands.get_mut(&name.to_ascii_lowercase()) {
                entry.metadata_only = true;
            }
        }
        Ok(Catalogue {
            commands,
            code_variables,
            verbs,
            sensitive,
            sensitive_needles,
            sensitive_what: SENSITIVE.iter().map(|(_, what)| *what).collect(),
            scratch,
        })
    }

    /// Whether `text` could name a sensitive path at all (one search of the whole argument, so
    /// that the words of an ordinary command are not each looked at).
    pub fn may_name_secrets(&self, text: &str) -> bool {
        text.contains(['\'', '"', '\\', '$']) || self.sensitive_needles.is_match(text)
    }

    /// How many commands it knows.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    /// Whether it knows no command.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// The entry of a command, also for versioned names (`python3.12`, `php8.2`, `pip3.11`).
    fn lookup(&self, name: &str) -> Option<&Entry> {
        self.commands.get(name).or_else(|| {
            let base = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
            let base = base.strip_suffix('-').unwrap_or(base);
            (base.len() < name.len() && !base.is_empty())
                .then(|| self.commands.get(base))
                .flatten()
        })
    }

    /// What the invocation does.
    ///
    /// `may_name_secrets`: whether the argument's text has any of the words every sensitive path
    /// has ([`Catalogue::may_name_secrets`]); when it has none, no word is looked at for one.
    pub fn classify(
        &self,
        argument: &str,
        invocation: &Invocation<'_>,
        may_name_secrets: bool,
    ) -> Classification {
        let name = invocation.name();
        let entry = self.lookup(name);
        let mut out = Classification {
            argument: argument.to_string(),
            span: invocation.span(),
            command: String::new(),
            effects: Vec::new(),
            writes: Vec::new(),
            scratch: Vec::new(),
            unknown: false,
            decided_by: String::new(),
        };
        // Variables that make programs run other code (`LESSOPEN=… less`, `LD_PRELOAD=…`), set
        // before the command or among its arguments (`env LD_PRELOAD=…`, `export PAGER=…`).
        let named_in_args = invocation
            .arg_texts()
            .filter(|w| w.contains('=') && !w.starts_with('-'));
        for assignment in invocation.assignments().chain(named_in_args) {
            let variable = assignment.split_once('=').map_or(assignment, |(n, _)| n);
            if self.code_variables.contains(variable) {
                push_effect(
                    &mut out,
                    Category::RunsUnreviewedCode,
                    format!("sets {variable}, which makes it run other code"),
                );
            }
        }
        // Redirections: writes, and reads of secrets.
        let mut redirected = false;
        for redirect in invocation.redirects() {
            let op = invocation.redirect_op(redirect);
            let target = invocation.text(&redirect.target);
            if op.contains('>') {
                // `2>&1` and `>&-` duplicate or close a descriptor; `>& file` writes a file.
                let duplicates = op.ends_with('&') && is_fd(target);
                if !duplicates {
                    redirected |= self.write_path(target, &mut out);
                }
            } else if may_name_secrets && !op.contains("<<") && !op.ends_with('&') {
                self.read_path(target, &mut out);
            }
        }
        let reads_contents = may_name_secrets && !entry.is_some_and(|e| e.metadata_only);
        for word in invocation.arg_texts().filter(|_| reads_contents) {
            // `--file=/etc/shadow`, `if=/etc/shadow`, `@/etc/shadow`: the value is the path.
            let value = word
                .split_once('=')
                .map_or(word, |(_, v)| v)
                .trim_start_matches('@');
            self.read_path(value, &mut out);
            if value != word {
                self.read_path(word, &mut out);
            }
        }
        let redirection = if redirected {
            ", and a redirection"
        } else {
            ""
        };
        // A program run from a path of its own (`./deploy.sh`, `/tmp/ls`) is whatever is there,
        // not the command its name suggests.
        let word = invocation.command_word();
        if word.contains([' ', '\t', '\n', ';', '|', '&', '<', '>', '#']) {
            // Not a program's name: a command line the reading took as one word (`flock f -c
            // '…'`, `watch 'a; b' -x`). Nobody can tell what it runs.
            out.unknown = true;
        }
        if let Some((dir, _)) = word.rsplit_once('/') {
            if !is_program_dir(dir) {
                push_effect(
                    &mut out,
                    Category::RunsUnreviewedCode,
                    format!("runs the program at {word}, which nobody can review here"),
                );
            }
        }
        match entry {
            None => {
                out.unknown = true;
                out.command = name.to_string();
                out.decided_by = format!("not in the catalogue{redirection}");
            }
            Some(entry) if entry.payload && invocation.has_payload() => {
                out.command = entry.path.clone();
                out.decided_by = format!(
                    "catalogue: {} (its -c payload is judged on its own){redirection}",
                    entry.path
                );
            }
            Some(entry) if entry.plain => {
                // Most commands: one effect whatever the arguments (unless it is asked for help).
                out.command = entry.path.clone();
                let help = entry.effect != Stated::ReadOnly
                    && invocation
                        .arg_texts()
                        .take_while(|w| w.starts_with('-'))
                        .any(|w| matches!(w, "--help" | "--version" | "--usage"));
                if help {
                    out.decided_by = format!("catalogue: {} (help){redirection}", entry.path);
                } else {
                    self.apply(entry.effect, entry, "", &mut out);
                    out.decided_by = entry.decided.clone();
                    out.decided_by.push_str(redirection);
                }
            }
            Some(entry) => {
                let words: Vec<&str> = invocation.arg_texts().collect();
                let decided = self.by_entry(entry, &words, invocation.wraps(), &mut out, 0);
                out.decided_by = decided;
                out.decided_by.push_str(redirection);
            }
        }
        out
    }

    /// Classify `words` (the arguments) by `top` into `out`; what decided, in words.
    fn by_entry(
        &self,
        top: &Entry,
        words: &[&str],
        wraps: bool,
        out: &mut Classification,
        depth: usize,
    ) -> String {
        let flags = Flags::of(words);
        let parsed = Operands::read(words, &top.value_flags);
        // Down the subcommands.
        let mut levels: Vec<&Entry> = Vec::with_capacity(4);
        levels.push(top);
        let mut level = top;
        let mut at: usize = 0;
        let mut verb: Option<(String, Stated)> = None;
        loop {
            if let Some(other) = &level.same_as {
                // `podman` is `docker`; `k3s kubectl …` is `kubectl …`.
                let rest = match at.checked_sub(1).and_then(|i| parsed.operands.get(i)) {
                    Some(&(index, _)) => words.get(index + 1..).unwrap_or_default(),
                    None => words,
                };
                match self.lookup(other).filter(|_| depth < 4) {
                    Some(entry) => return self.by_entry(entry, rest, wraps, out, depth + 1),
                    None => {
                        out.unknown = true;
                        return format!(
                            "catalogue: {} (as `{other}`, which it does not know)",
                            level.path
                        );
                    }
                }
            }
            if level.subcommands.is_empty() {
                break;
            }
            let Some(&(_, word)) = parsed.operands.get(at) else {
                break;
            };
            match level.subcommands.get(&word.to_ascii_lowercase()) {
                Some(sub) => {
                    level = sub;
                    levels.push(sub);
                    at += 1;
                }
                None => {
                    let candidates: Vec<&str> = parsed
                        .operands
                        .iter()
                        .skip(at)
                        .take(level.verb_depth)
                        .map(|&(_, w)| w)
                        .collect();
                    verb = Some(self.by_verb(&candidates, level.verb_category));
                    break;
                }
            }
        }
        out.command = match &verb {
            Some((word, _)) => format!("{} {word}", level.path),
            None => level.path.clone(),
        };
        // Asking for help or the version runs nothing, when that is all the invocation says:
        // its subcommands and then one `--help`, `--version`, `--usage` (or `help` where a
        // subcommand would be). Anywhere else the word may be an option's value or be handed to
        // code (`python3 -c '…' --help` runs the code).
        let rest: &[&str] = match at.checked_sub(1).and_then(|i| parsed.operands.get(i)) {
            Some(&(index, _)) => words.get(index + 1..).unwrap_or_default(),
            None => words,
        };
        let asks_help = match rest {
            [only] => {
                matches!(*only, "--help" | "--version" | "--usage")
                    || (*only == "help" && levels.len() > 1 && verb.is_some())
            }
            _ => false,
        };
        if asks_help {
            return format!("catalogue: {} (help)", level.path);
        }
        // A dry run changes nothing.
        if levels
            .iter()
            .any(|entry| dry_run_given(words, &entry.dry_run, &top.value_flags))
        {
            return format!("catalogue: {} (dry run)", level.path);
        }
        // The arguments as `args` regexes see them, joined only when some rule has one.
        let joined = if levels
            .iter()
            .any(|entry| entry.rules.iter().any(|rule| rule.args.is_some()))
        {
            words.join(" ")
        } else {
            String::new()
        };
        // Rules of every level; outputs of every level.
        let mut final_rule_matched = false;
        for (index, entry) in levels.iter().enumerate() {
            let is_final = index + 1 == levels.len();
            for rule in &entry.rules {
                if !rule_matches(rule, &flags, &joined) {
                    continue;
                }
                if is_final {
                    final_rule_matched = true;
                }
                let why = rule.why.as_deref().or(entry.why.as_deref());
                let mut wrote = false;
                if let Some(writes) = rule.writes {
                    let paths = match writes {
                        Writes::FlagValue => flag_values(words, &rule.flags),
                        other => parsed.written(other, entry.script_first.as_deref(), &flags),
                    };
                    for path in &paths {
                        wrote = true;
                        self.write_path(path, out);
                    }
                }
                if !wrote || rule.writes.is_none() {
                    match rule.effect {
                        Some(Stated::Is(category)) => push_effect(
                            out,
                            category,
                            why.unwrap_or(category_words(category)).to_string(),
                        ),
                        Some(Stated::Unknown) => out.unknown = true,
                        _ => {}
                    }
                }
            }
            for path in flag_values(words, &entry.output_flags) {
                self.write_path(&path, out);
            }
            for key in &entry.output_keys {
                for word in words {
                    if let Some(path) = word
                        .strip_prefix(key.as_str())
                        .and_then(|rest| rest.strip_prefix('='))
                    {
                        self.write_path(path, out);
                    }
                }
            }
            if let Some(writes) = entry.writes.filter(|_| is_final) {
                for path in parsed.written(writes, entry.script_first.as_deref(), &flags) {
                    self.write_path(&path, out);
                }
            }
            if let Some(deletes) = entry.deletes.filter(|_| is_final && !final_rule_matched) {
                let paths = parsed.written(deletes, entry.script_first.as_deref(), &flags);
                if paths.is_empty() {
                    self.apply(entry.effect, entry, "", out);
                }
                for path in paths {
                    // Under scratch is no effect; the scratch directory itself is not.
                    let whole_scratch = self.scratch.iter().any(|s| *s == normalise(&path));
                    if whole_scratch || self.path_category(&path).is_some() {
                        let why = entry.why.as_deref().unwrap_or("deletes");
                        push_effect(out, Category::Destructive, format!("{why} {path}"));
                    } else {
                        note_scratch(&path, out);
                    }
                }
            }
        }
        if let (Some(alone), false) = (level.alone, wraps) {
            // A wrapper with nothing to run: `env` prints the environment.
            if !final_rule_matched {
                self.apply(alone, level, "", out);
                return format!("catalogue: {} (with no command to run)", level.path);
            }
        }
        match verb {
            Some((word, stated)) => {
                if !final_rule_matched {
                    self.apply(stated, level, &word, out);
                }
                format!("the verb of `{word}` ({})", level.path)
            }
            None => {
                if !final_rule_matched && level.writes.is_none() && level.deletes.is_none() {
                    self.apply(level.effect, level, "", out);
                }
                level.decided.clone()
            }
        }
    }

    /// Add what an entry (or a verb) states.
    fn apply(&self, stated: Stated, level: &Entry, verb: &str, out: &mut Classification) {
        match stated {
            Stated::ReadOnly => {}
            Stated::Unknown => out.unknown = true,
            Stated::Is(category) => {
                let why = if verb.is_empty() {
                    level
                        .why
                        .clone()
                        .unwrap_or_else(|| category_words(category).to_string())
                } else {
                    format!(
                        "{}, by its verb `{verb}` ({})",
                        category_words(category),
                        category_name(category)
                    )
                };
                push_effect(out, category, why);
            }
        }
    }

    /// Decide an unlisted subcommand by its verb: the first candidate word with one.
    fn by_verb(&self, candidates: &[&str], verb_category: Option<Category>) -> (String, Stated) {
        let first = candidates.first().copied().unwrap_or_default();
        for word in candidates {
            let lower = word.to_ascii_lowercase();
            let parts: Vec<&str> = lower
                .split(['-', '_', ':', '.'])
                .filter(|p| !p.is_empty())
                .collect();
            if let Some(&category) = parts.iter().find_map(|p| self.verbs.change.get(*p)) {
                let category = match verb_category {
                    Some(chosen) if category != Category::Destructive => chosen,
                    _ => category,
                };
                return ((*word).to_string(), Stated::Is(category));
            }
            if let Some(head) = parts.first() {
                if self.verbs.read.contains(*head) {
                    let secret = parts.iter().any(|p| self.verbs.secret.contains(*p))
                        && !matches!(*head, "list" | "ls");
                    return (
                        (*word).to_string(),
                        if secret {
                            Stated::Is(Category::Secrets)
                        } else {
                            Stated::ReadOnly
                        },
                    );
                }
            }
        }
        (first.to_string(), Stated::Unknown)
    }

    /// Record a write of `path`; false when it is scratch (no effect).
    fn write_path(&self, path: &str, out: &mut Classification) -> bool {
        let Some(category) = self.path_category(path) else {
            note_scratch(path, out);
            return false;
        };
        if !out.writes.iter().any(|p| p == path) {
            out.writes.push(path.to_string());
        }
        let why = format!("writes {path} ({})", category_name(category));
        push_effect(out, category, why);
        true
    }

    /// Record a read of a secret, when `path` is one.
    fn read_path(&self, path: &str, out: &mut Classification) {
        if path.is_empty() || path.ends_with(".pub") || !self.sensitive_needles.is_match(path) {
            return;
        }
        // `/etc//shadow`, `/etc/./shadow`; a glob stands for any name (`~/.ssh/id_*`).
        let normal = normalise(path).replace(['*', '?'], "x");
        if let Some(index) = self.sensitive.matches(&normal).iter().next() {
            let what = self
                .sensitive_what
                .get(index)
                .copied()
                .unwrap_or("a secret");
            push_effect(out, Category::Secrets, format!("reads {path} ({what})"));
        }
    }

    /// What writing `path` is: `None` for scratch.
    fn path_category(&self, path: &str) -> Option<Category> {
        if path.is_empty() || path == "-" {
            return None;
        }
        let normal = normalise(path);
        let stream = matches!(
            normal.as_ref(),
            "/dev/null" | "/dev/stdout" | "/dev/stderr" | "/dev/tty"
        ) || ["/dev/fd/", "/proc/self/fd/"].iter().any(|prefix| {
            normal
                .strip_prefix(prefix)
                .is_some_and(|fd| !fd.is_empty() && fd.bytes().all(|b| b.is_ascii_digit()))
        });
        if stream {
            return None;
        }
        // A path the shell will still expand (`/tmp/$X`, `/tmp/{a,../etc/x}`, `/tmp/*`) may end
        // anywhere: it is not scratch.
        let expands = path.contains(['$', '`', '{', '*', '?', '[']);
        if !expands && self.scratch.iter().any(|s| is_under(&normal, s)) {
            return None;
        }
        if normal.starts_with("/dev/") {
            return Some(Category::DeviceWrite);
        }
        if is_system_path(&normal) {
            return Some(Category::SystemConfig);
        }
        Some(Category::WritesFiles)
    }
}

/// Every `same_as` names a command the catalogue knows.
fn check_same_as<S: std::hash::BuildHasher>(
    place: &Place<'_>,
    entry: &Entry,
    commands: &HashMap<String, Entry, S>,
) -> Result<(), PolicyError> {
    if let Some(other) = &entry.same_as {
        if !commands.contains_key(other) {
            return Err(place.err(
                format!("commands.{}", entry.path.replace(' ', ".subcommands.")),
                format!("`same_as = \"{other}\"` names a command the catalogue does not have"),
            ));
        }
    }
    for sub in entry.subcommands.values() {
        check_same_as(place, sub, commands)?;
    }
    Ok(())
}

/// The flags of a list of arguments, read by the analysis's own reader
/// ([`crate::analysis::flag_word`]): `-xvf` is `x`, `v`, `f` (and the long name `xvf`, for
/// `-name`-style options); `--force=yes` is `force`. Nothing after `--` is a flag. (The
/// catalogue reads a slice of the arguments, after `same_as`, so it cannot use the
/// invocation's own flag set.)
struct Flags<'w> {
    /// Short flags, as [`crate::analysis::short_mask`] bits.
    short: u64,
    long: Vec<&'w str>,
}

impl<'w> Flags<'w> {
    fn of(words: &[&'w str]) -> Self {
        let mut flags = Flags {
            short: 0,
            long: Vec::new(),
        };
        let mut found = |short: u64, long: Option<&'w str>| {
            flags.short |= short;
            flags.long.extend(long);
        };
        for word in words.iter().filter(|w| w.starts_with('-')) {
            if !crate::analysis::flag_word(word, &mut found) {
                break;
            }
        }
        flags
    }

    /// Whether `name` was given: one character is a short flag, more a long name (ignoring
    /// ASCII case).
    fn has(&self, name: &str) -> bool {
        let mut chars = name.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => self.short & crate::analysis::short_mask([c]) != 0,
            _ => self.long.iter().any(|l| l.eq_ignore_ascii_case(name)),
        }
    }
}

/// The directories programs are installed in: a command run from one of them is the command
/// its name says.
fn is_program_dir(dir: &str) -> bool {
    matches!(
        dir,
        "/bin"
            | "/sbin"
            | "/usr/bin"
            | "/usr/sbin"
            | "/usr/local/bin"
            | "/usr/local/sbin"
            | "/snap/bin"
            | "/usr/games"
    ) || dir.starts_with("/usr/lib/")
        || dir.starts_with("/usr/libexec/")
}

/// Whether `path` is `root` or inside it.
fn is_under(path: &str, root: &str) -> bool {
    path.strip_prefix(root)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether one of the dry-run flags `names` is given as a flag of its own: `-n`, `--dry-run`,
/// `--dry-run=true`, `-vn`; not `--dry-run=false` or `--dry-run=none`, and not a word that is
/// another option's value (`--exclude -n`).
fn dry_run_given(words: &[&str], names: &[String], value_flags: &BTreeSet<String>) -> bool {
    if names.is_empty() {
        return false;
    }
    let mut given = false;
    let mut previous_takes_value = false;
    for word in words {
        if *word == "--" {
            break;
        }
        let is_value = std::mem::replace(
            &mut previous_takes_value,
            word.starts_with('-')
                && !word.contains('=')
                && value_flags.contains(word.trim_start_matches('-')),
        );
        if is_value || !word.starts_with('-') {
            continue;
        }
        let rest = word.trim_start_matches('-');
        let (name, value) = match rest.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (rest, None),
        };
        let falsy = value.is_some_and(|v| {
            matches!(
                v.to_ascii_lowercase().as_str(),
                "false" | "none" | "0" | "no" | "off" | ""
            )
        });
        let long = names
            .iter()
            .any(|n| n.len() > 1 && n.eq_ignore_ascii_case(name));
        let short = !word.starts_with("--")
            && value.is_none()
            && name.chars().all(|c| c.is_ascii_alphanumeric())
            && names
                .iter()
                .any(|n| n.len() == 1 && name.contains(n.as_str()));
        if long || short {
            // The last time it is given decides (`--dry-run --dry-run=none` is a real run).
            given = !falsy;
        }
    }
    given
}

/// `path` with `.` and `..` resolved textually (so `/tmp/../etc/x` is `/etc/x`).
fn normalise(path: &str) -> Cow<'_, str> {
    let clean = !path.contains("//")
        && !path.contains("/./")
        && !path.contains("/../")
        && !path.ends_with("/.")
        && !path.ends_with("/..")
        && !path.starts_with("./")
        && !path.starts_with("../")
        && (path.len() < 2 || !path.ends_with('/'))
        && path != "."
        && path != "..";
    if clean {
        return Cow::Borrowed(path);
    }
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    Cow::Owned(if absolute {
        format!("/{joined}")
    } else {
        joined
    })
}

/// System locations: configuration, boot, programs, state, credentials and start-up files.
fn is_system_path(path: &str) -> bool {
    const ROOTS: &[&str] = &[
        "/etc",
        "/boot",
        "/usr",
        "/var/lib",
        "/lib",
        "/lib64",
        "/lib32",
        "/bin",
        "/sbin",
        "/opt",
        "/root",
        "/var/spool/cron",
        "/var/spool/anacron",
        "/sys",
        "/proc",
        "/efi",
        "/var/www",
        "/srv/www",
        "/run/systemd",
    ];
    const HOME_FILES: &[&str] = &[
        ".ssh",
        ".bashrc",
        ".bash_profile",
        ".profile",
        ".zshrc",
        ".zprofile",
        ".bash_login",
        ".bash_logout",
        ".config/systemd",
        ".config/autostart",
        ".gitconfig",
        ".kube",
        ".aws",
        ".docker",
        ".gnupg",
        ".netrc",
        ".pgpass",
        ".npmrc",
        ".pypirc",
        ".vimrc",
        ".inputrc",
        ".xinitrc",
        ".xprofile",
        ".local/bin",
    ];
    if ROOTS.iter().any(|root| is_under(path, root)) {
        return true;
    }
    // `~/.ssh/…`, `$HOME/.bashrc`, `/home/deploy/.ssh/…`.
    let in_home = path
        .strip_prefix("~/")
        .or_else(|| path.strip_prefix("$HOME/"))
        .or_else(|| path.strip_prefix("${HOME}/"))
        .or_else(|| {
            path.strip_prefix("/home/")
                .and_then(|rest| rest.split_once('/').map(|(_, r)| r))
        });
    in_home.is_some_and(|rest| HOME_FILES.iter().any(|f| is_under(rest, f)))
}

/// A file descriptor number (`2>&1`), or `-` (close).
fn is_fd(target: &str) -> bool {
    target == "-" || (!target.is_empty() && target.bytes().all(|b| b.is_ascii_digit()))
}

/// Record a path under scratch (not `/dev/null` and the like, which are no file at all).
fn note_scratch(path: &str, out: &mut Classification) {
    let path = path.trim();
    let nothing =
        path.is_empty() || path == "-" || path.starts_with("/dev/") || path.starts_with("/proc/");
    if !nothing && !out.scratch.iter().any(|p| p == path) {
        out.scratch.push(path.to_string());
    }
}

fn push_effect(out: &mut Classification, category: Category, why: String) {
    if !out
        .effects
        .iter()
        .any(|e| e.category == category && e.why == why)
    {
        out.effects.push(Effect { category, why });
    }
}

/// A category as a short noun, for the parentheses of a reason: "restarts a unit (service
/// disruption)".
pub fn category_name(category: Category) -> &'static str {
    match category {
        Category::Destructive => "destructive",
        Category::WritesFiles => "files",
        Category::SystemConfig => "system configuration",
        Category::ServiceDisruption => "service disruption",
        Category::Packages => "packages",
        Category::Permissions => "permissions and accounts",
        Category::PrivilegeEscalation => "privilege escalation",
        Category::ProcessKill => "processes",
        Category::Firewall => "firewall and network",
        Category::NetworkExposure => "network exposure",
        Category::RemoteCodeExecution => "remote code execution",
        Category::RunsUnreviewedCode => "unreviewed code",
        Category::Secrets => "secrets",
        Category::RemoteState => "remote state",
        Category::DeviceWrite => "block device",
        Category::ForceFlag => "force",
    }
}

/// A category in a reviewer's words.
pub fn category_words(category: Category) -> &'static str {
    match category {
        Category::Destructive => "deletes data",
        Category::WritesFiles => "files",
        Category::SystemConfig => "system configuration",
        Category::ServiceDisruption => "disrupts a service",
        Category::Packages => "changes packages",
        Category::Permissions => "changes permissions or accounts",
        Category::PrivilegeEscalation => "runs with elevated privileges",
        Category::ProcessKill => "kills or signals processes",
        Category::Firewall => "changes the firewall or network",
        Category::NetworkExposure => "opens or sends to the network",
        Category::RemoteCodeExecution => "runs code from elsewhere",
        Category::RunsUnreviewedCode => "runs code nobody can review here",
        Category::Secrets => "exposes secrets",
        Category::RemoteState => "changes remote state",
        Category::DeviceWrite => "a block device",
        Category::ForceFlag => "forces without asking",
    }
}

fn rule_matches(rule: &Rule, flags: &Flags<'_>, joined: &str) -> bool {
    let flags_ok = rule.flags.is_empty() || rule.flags.iter().any(|f| flags.has(f));
    // A regex that cannot be compiled matches a rule that adds an effect, and not one that
    // clears it: either way towards asking.
    let clears = rule.effect == Some(Stated::ReadOnly);
    let args_ok = rule
        .args
        .as_ref()
        .is_none_or(|re| re.is_match(joined).unwrap_or(!clears));
    flags_ok && args_ok
}

/// The values of the given options: `-o FILE`, `-oFILE`, `--output FILE`, `--output=FILE`,
/// and `-czf FILE` (the option last in a group of short flags).
fn flag_values(words: &[&str], names: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    if names.is_empty() {
        return out;
    }
    let short = |c: char| names.iter().any(|n| n.len() == 1 && n.starts_with(c));
    let long = |n: &str| {
        names
            .iter()
            .any(|m| m.len() > 1 && m.eq_ignore_ascii_case(n))
    };
    let mut i = 0;
    while i < words.len() {
        let word = words.get(i).copied().unwrap_or_default();
        let next = words.get(i + 1).copied();
        i += 1;
        if word == "--" {
            break;
        }
        // `--output FILE`, `--output=FILE`, and `-exec`-style long names after one dash.
        let dashes = if word.starts_with("--") { 2 } else { 1 };
        let Some(rest) = word
            .get(dashes..)
            .filter(|r| word.starts_with('-') && !r.is_empty())
        else {
            continue;
        };
        let (name, value) = match rest.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (rest, None),
        };
        if (dashes == 2 || name.len() > 1) && long(name) {
            match (value, next) {
                (Some(v), _) => out.push(v.to_string()),
                (None, Some(v)) => {
                    out.push(v.to_string());
                    i += 1;
                }
                (None, None) => {}
            }
            continue;
        }
        if dashes == 2 {
            continue;
        }
        // A group of short flags: the first that takes a value takes the rest of the group, or
        // the next word.
        for (at, c) in rest.char_indices() {
            if !c.is_ascii_alphanumeric() {
                break;
            }
            if short(c) {
                let tail = rest.get(at + c.len_utf8()..).unwrap_or_default();
                if tail.is_empty() {
                    if let Some(v) = next {
                        out.push(v.to_string());
                        i += 1;
                    }
                } else {
                    out.push(tail.trim_start_matches('=').to_string());
                }
                break;
            }
        }
    }
    out
}

/// The operands of an invocation: the words that are not flags or the values of flags.
struct Operands<'w> {
    /// Each operand with its place among the arguments.
    operands: Vec<(usize, &'w str)>,
}

impl<'w> Operands<'w> {
    fn read(words: &[&'w str], value_flags: &BTreeSet<String>) -> Self {
        let mut operands = Vec::new();
        let mut i = 0;
        let mut only_operands = false;
        while let Some(&word) = words.get(i) {
            i += 1;
            if only_operands || word == "-" || !word.starts_with('-') {
                operands.push((i - 1, word));
                continue;
            }
            if word == "--" {
                only_operands = true;
                continue;
            }
            if word.contains('=') {
                continue;
            }
            let name = word.trim_start_matches('-');
            let takes = value_flags.contains(name)
                || (!word.starts_with("--")
                    && name.len() > 1
                    && name
                        .chars()
                        .last()
                        .is_some_and(|c| value_flags.contains(&c.to_string()))
                    && name.chars().all(|c| c.is_ascii_alphabetic()));
            if takes {
                i += 1;
            }
        }
        Operands { operands }
    }

    /// The operands a command writes: all of them or the last, without a leading script.
    fn written(
        &self,
        writes: Writes,
        script_first: Option<&[String]>,
        flags: &Flags<'_>,
    ) -> Vec<String> {
        let mut operands: &[(usize, &str)] = &self.operands;
        if let Some(script_flags) = script_first {
            if !script_flags.iter().any(|f| flags.has(f)) {
                operands = operands.get(1..).unwrap_or_default();
            }
        }
        match writes {
            Writes::Operands => operands.iter().map(|(_, s)| s.to_string()).collect(),
            Writes::LastOperand => {
                if operands.len() < 2 {
                    Vec::new()
                } else {
                    operands
                        .last()
                        .map(|(_, s)| vec![s.to_string()])
                        .unwrap_or_default()
                }
            }
            Writes::FlagValue => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis;

    fn catalogue() -> Catalogue {
        match Catalogue::compile("test", None, &[]) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn classify(command: &str) -> Vec<Classification> {
        let catalogue = catalogue();
        let analysis = analysis::invocations(command);
        analysis
            .invocations()
            .map(|inv| catalogue.classify("command", &inv, true))
            .collect()
    }

    /// The categories of the whole command line, and whether anything was unknown.
    fn effects(command: &str) -> (BTreeSet<&'static str>, bool) {
        let all = classify(command);
        let categories = all
            .iter()
            .flat_map(|c| c.effects.iter().map(|e| e.category.as_str()))
            .collect();
        (categories, all.iter().any(|c| c.unknown))
    }

    fn read_only(command: &str) {
        let (categories, unknown) = effects(command);
        assert!(
            categories.is_empty() && !unknown,
            "{command}: {categories:?} unknown={unknown} {:#?}",
            classify(command)
        );
    }

    fn has(command: &str, category: &str) {
        let (categories, _) = effects(command);
        assert!(
            categories.contains(category),
            "{command}: expected {category}, got {categories:?} {:#?}",
            classify(command)
        );
    }

    #[test]
    fn the_builtin_catalogue_loads_and_is_large() {
        let c = catalogue();
        assert!(c.len() >= 600, "{} commands", c.len());
    }

    #[test]
    fn reading_is_read_only() {
        for command in [
            "ls -la /var/log",
            "cat /var/log/syslog | grep -i error | tail -n 50",
            "systemctl status nginx",
            "journalctl -u nginx --since today",
            "df -h",
            "git log --oneline -n 5",
            "docker ps -a",
            "kubectl get pods -n prod",
            "echo hello > /tmp/out.txt",
            "grep -r TODO /srv/app 2>/dev/null",
            "sudo -l",
        ] {
            read_only(command);
        }
    }

    #[test]
    fn writes_are_judged_by_their_path() {
        has("echo 1.2.3.4 web > /etc/hosts", "system-config");
        has("echo x >> /srv/app/notes.txt", "writes-files");
        has("echo x | tee /etc/cron.d/job", "system-config");
        has("dd if=/dev/zero of=/dev/sdb bs=1M", "device-write");
        has(
            "curl -o /opt/app/app.conf https://example.com/x",
            "system-config",
        );
        has("sed -i s/a/b/ /srv/app/data.txt", "writes-files");
        has("cp a.txt /tmp/../etc/passwd", "system-config");
        read_only("curl -o /tmp/x https://example.com/");
        read_only("tee /tmp/out.log");
        read_only("sed s/a/b/ /srv/app/data.txt");
    }

    #[test]
    fn sensitive_paths_are_secrets_whatever_the_program() {
        has("uniq /etc/shadow", "secrets");
        has("base64 ~/.ssh/id_ed25519", "secrets");
        has("xxd /home/deploy/.ssh/id_rsa", "secrets");
        has("cat /proc/1/environ", "secrets");
        has("grep KEY /srv/app/.env", "secrets");
        read_only("cat ~/.ssh/id_ed25519.pub");
    }

    #[test]
    fn what_an_independent_review_found_now_asks() {
        // A shell's payload behind an option with a value; a `-c` after a script operand.
        has("bash -o pipefail -c 'rm -rf /srv/data'", "destructive");
        has("bash /tmp/x.sh -c", "runs-unreviewed-code");
        // A program run from a path of its own is not the command its name says.
        has("/tmp/ls -la", "runs-unreviewed-code");
        has("./deploy.sh", "runs-unreviewed-code");
        read_only("/usr/bin/ls -la /var/log");
        // Paths the shell still expands, and descriptors that are not one.
        has("echo x > /tmp/$X", "writes-files");
        has("rm -r /tmp/{../srv/data,x}", "destructive");
        has("echo x > /dev/fd/../root/etc/cron.d/job", "device-write");
        read_only("echo x > /dev/fd/2");
        // `--help` only when it is all the invocation asks.
        has("python3 -c 'import os' --help", "runs-unreviewed-code");
        has(
            "curl -d --help -X DELETE https://api.example.com/x",
            "remote-state",
        );
        read_only("docker container rm --help");
        // Variables that run code, set as arguments.
        has("env LD_PRELOAD=/tmp/x.so ls", "runs-unreviewed-code");
        has("export PAGER='sh -c id'", "runs-unreviewed-code");
        // Secrets however they are spelled.
        has("cat /etc//shadow", "secrets");
        has("cat ~/.ssh/id_*", "secrets");
        has("tar c ~/.ssh", "secrets");
        // Builtins that run code later.
        has("trap 'rm -rf /srv' EXIT", "runs-unreviewed-code");
        // A command line taken as one word is unknown.
        let (_, unknown) = effects("flock /tmp/l -c 'rm -rf ~ #/ls'");
        assert!(unknown);
    }

    #[test]
    fn a_dry_run_is_a_flag_of_its_own() {
        let names = vec!["n".to_string(), "dry-run".to_string()];
        let values: BTreeSet<String> = ["exclude".to_string()].into();
        let given = |words: &[&str]| dry_run_given(words, &names, &values);
        assert!(given(&["-n", "src", "dst"]));
        assert!(given(&["-avn", "src", "dst"]));
        assert!(given(&["--dry-run", "x"]));
        assert!(given(&["--dry-run=true"]));
        assert!(!given(&["--dry-run=false"]));
        assert!(!given(&["--dry-run", "--dry-run=none"]));
        assert!(!given(&["--exclude", "-n", "src"]));
        assert!(!given(&["src", "dst"]));
    }

    #[test]
    fn every_sensitive_path_has_a_needle() {
        let c = catalogue();
        // One example of each entry of SENSITIVE, in order.
        let examples = [
            "/etc/shadow",
            "/etc/sudoers.d/deploy",
            "/home/deploy/.ssh/id_ed25519",
            "/root/.ssh",
            "/etc/ssh/ssh_host_rsa_key",
            "/srv/app/tls/server.key",
            "/srv/app/.env.production",
            "/proc/1/environ",
            "~/.aws/credentials",
            "/root/.config/gcloud/credentials.db",
            "/root/.azure/accessTokens.json",
            "/home/deploy/.kube/config",
            "/etc/kubernetes/admin.conf",
            "/root/.docker/config.json",
            "/root/.pgpass",
            "/root/.gnupg/private-keys-v1.d/x",
            "/root/.password-store/db.gpg",
            "/etc/ssl/private/site.pem",
            "/etc/letsencrypt/live/example.com/privkey.pem",
            "/run/secrets/db_password",
            "/srv/app/config/secrets.yml",
            "/root/.bash_history",
            "/var/lib/sss/secrets/secrets.ldb",
            "/etc/krb5.keytab",
        ];
        assert_eq!(examples.len(), SENSITIVE.len());
        for (i, example) in examples.iter().enumerate() {
            assert!(c.may_name_secrets(example), "{example}: no needle");
            assert!(
                c.sensitive.matches(example).matched(i),
                "{example}: not matched by SENSITIVE[{i}]"
            );
        }
    }

    #[test]
    fn unknown_commands_and_subcommands_are_unknown() {
        let (_, unknown) = effects("frobnicate --all");
        assert!(unknown);
        let (_, unknown) = effects("git frobnicate");
        assert!(unknown);
        let found = classify("frobnicate");
        assert_eq!(found[0].decided_by, "not in the catalogue");
    }

    #[test]
    fn verbs_decide_unlisted_subcommands() {
        has(
            "aws ec2 terminate-instances --instance-ids i-1",
            "destructive",
        );
        has("rails db:migrate", "remote-state");
        read_only("aws ec2 describe-instances --region eu-west-1");
    }

    #[test]
    fn subcommands_flags_and_runners() {
        has("systemctl restart nginx", "service-disruption");
        has("kubectl delete pod web-1", "destructive");
        has("git push --force origin main", "destructive");
        has("terraform destroy", "destructive");
        has("helm uninstall web", "destructive");
        has("find /srv -name '*.log' -delete", "destructive");
        has("python3 /tmp/x.py", "runs-unreviewed-code");
        has("bash deploy.sh", "runs-unreviewed-code");
        has("npx cowsay hi", "runs-unreviewed-code");
        has("pkill -f worker", "process-kill");
        has("apt-get install -y nginx", "packages");
        has("nc -lvp 4444", "network-exposure");
        has("tar xzf backup.tar.gz", "writes-files");
        read_only("python3 --version");
        read_only("bash -c 'uptime'");
    }

    #[test]
    fn flag_values_are_found_in_every_spelling() {
        let names = vec!["o".to_string(), "output".to_string()];
        let words = ["-o", "a", "-ob", "--output", "c", "--output=d", "-vo", "e"];
        assert_eq!(flag_values(&words, &names), vec!["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn paths_are_normalised_before_they_are_judged() {
        let c = catalogue();
        assert_eq!(c.path_category("/tmp/x"), None);
        assert_eq!(
            c.path_category("/tmp/../etc/x"),
            Some(Category::SystemConfig)
        );
        assert_eq!(c.path_category("/dev/null"), None);
        assert_eq!(c.path_category("/dev/sda"), Some(Category::DeviceWrite));
        assert_eq!(c.path_category("out.txt"), Some(Category::WritesFiles));
        assert_eq!(
            c.path_category("~/.ssh/authorized_keys"),
            Some(Category::SystemConfig)
        );
        assert_eq!(c.path_category("/tmpfoo"), Some(Category::WritesFiles));
    }
}
