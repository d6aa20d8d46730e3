//! The console's keys: actions bound to keys by a TOML file. The defaults (`assets/keys.toml`) are
//! embedded; `~/.config/pgshift/keys.toml` or `--keys FILE` rebinds any action.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde::Deserialize;

use crate::error::{toml_place, UserError};

pub const DEFAULT_KEYS: &str = include_str!("../../assets/keys.toml");

/// Everything a key can ask the console for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    RunSelected,
    RunAll,
    Retry,
    Skip,
    Cancel,
    VerifyNow,
    Cutover,
    LiveVerify,
    NextView,
    ViewStages,
    ViewVerify,
    ViewPlan,
    Search,
    NextMatch,
    PreviousMatch,
    Follow,
    Help,
    Quit,
    Interrupt,
}

impl Action {
    /// The name used in the keys file and the help text.
    pub fn name(self) -> &'static str {
        match self {
            Action::Up => "up",
            Action::Down => "down",
            Action::PageUp => "page-up",
            Action::PageDown => "page-down",
            Action::Top => "top",
            Action::Bottom => "bottom",
            Action::RunSelected => "run-selected",
            Action::RunAll => "run-all",
            Action::Retry => "retry",
            Action::Skip => "skip",
            Action::Cancel => "cancel",
            Action::VerifyNow => "verify-now",
            Action::Cutover => "cutover",
            Action::LiveVerify => "live-verify",
            Action::NextView => "next-view",
            Action::ViewStages => "view-stages",
            Action::ViewVerify => "view-verify",
            Action::ViewPlan => "view-plan",
            Action::Search => "search",
            Action::NextMatch => "next-match",
            Action::PreviousMatch => "previous-match",
            Action::Follow => "follow",
            Action::Help => "help",
            Action::Quit => "quit",
            Action::Interrupt => "interrupt",
        }
    }
}

/// A key as written in the keys file, normalized so `G` and `shift-g` are the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    code: KeyCode,
    modifiers: KeyModifiers,
}

impl Key {
    pub fn from_event(e: &KeyEvent) -> Key {
        let mut modifiers = e.modifiers & (KeyModifiers::CONTROL | KeyModifiers::ALT | KeyModifiers::SHIFT);
        let code = match e.code {
            // the character already carries the shift
            KeyCode::Char(c) => {
                modifiers.remove(KeyModifiers::SHIFT);
                KeyCode::Char(if modifiers.contains(KeyModifiers::CONTROL) { c.to_ascii_lowercase() } else { c })
            }
            KeyCode::BackTab => {
                modifiers.remove(KeyModifiers::SHIFT);
                KeyCode::BackTab
            }
            other => other,
        };
        Key { code, modifiers }
    }

    /// Parses `a`, `G`, `?`, `enter`, `ctrl-c`, `alt-x`, `f1`, `pageup`, `shift-tab`...
    pub fn parse(text: &str) -> Result<Key, String> {
        let mut modifiers = KeyModifiers::NONE;
        let mut rest = text;
        loop {
            let lower = rest.to_ascii_lowercase();
            if lower.starts_with("ctrl-") && rest.len() > 5 {
                modifiers |= KeyModifiers::CONTROL;
            } else if lower.starts_with("alt-") && rest.len() > 4 {
                modifiers |= KeyModifiers::ALT;
            } else if lower.starts_with("shift-") && rest.len() > 6 {
                modifiers |= KeyModifiers::SHIFT;
            } else {
                break;
            }
            rest = &rest[rest.find('-').expect("prefix has a dash") + 1..];
        }
        let mut chars = rest.chars();
        let code = match (chars.next(), chars.next()) {
            (Some(c), None) => KeyCode::Char(c),
            _ => match rest.to_ascii_lowercase().as_str() {
                "enter" | "return" => KeyCode::Enter,
                "esc" | "escape" => KeyCode::Esc,
                "tab" => KeyCode::Tab,
                "backtab" => KeyCode::BackTab,
                "backspace" => KeyCode::Backspace,
                "up" => KeyCode::Up,
                "down" => KeyCode::Down,
                "left" => KeyCode::Left,
                "right" => KeyCode::Right,
                "pageup" => KeyCode::PageUp,
                "pagedown" => KeyCode::PageDown,
                "home" => KeyCode::Home,
                "end" => KeyCode::End,
                "space" => KeyCode::Char(' '),
                f if f.starts_with('f') && f[1..].parse::<u8>().is_ok_and(|n| (1..=12).contains(&n)) => {
                    KeyCode::F(f[1..].parse().expect("checked"))
                }
                _ => return Err(format!("unknown key {text:?}")),
            },
        };
        // shift-tab is how terminals send backtab; shift-g is G
        let code = match code {
            KeyCode::Tab if modifiers.contains(KeyModifiers::SHIFT) => KeyCode::BackTab,
            KeyCode::Char(c) if modifiers.contains(KeyModifiers::SHIFT) => KeyCode::Char(c.to_ascii_uppercase()),
            c => c,
        };
        Ok(Key::from_event(&KeyEvent::new(code, modifiers)))
    }

    /// How the help and the footer write it.
    pub fn label(&self) -> String {
        let mut s = String::new();
        if self.modifiers.contains(KeyModifiers::CONTROL) {
            s.push_str("Ctrl-");
        }
        if self.modifiers.contains(KeyModifiers::ALT) {
            s.push_str("Alt-");
        }
        match self.code {
            KeyCode::Char(' ') => s.push_str("Space"),
            KeyCode::Char(c) => s.push(c),
            KeyCode::Enter => s.push_str("Enter"),
            KeyCode::Esc => s.push_str("Esc"),
            KeyCode::Tab => s.push_str("Tab"),
            KeyCode::BackTab => s.push_str("Shift-Tab"),
            KeyCode::Up => s.push('↑'),
            KeyCode::Down => s.push('↓'),
            KeyCode::Left => s.push('←'),
            KeyCode::Right => s.push('→'),
            KeyCode::PageUp => s.push_str("PgUp"),
            KeyCode::PageDown => s.push_str("PgDn"),
            KeyCode::Home => s.push_str("Home"),
            KeyCode::End => s.push_str("End"),
            KeyCode::F(n) => s.push_str(&format!("F{n}")),
            other => s.push_str(&format!("{other:?}")),
        }
        s
    }
}

#[derive(Debug, Clone)]
pub struct Keymap {
    keys: HashMap<Key, Action>,
    bindings: BTreeMap<Action, Vec<Key>>,
}

impl Keymap {
    /// The embedded defaults, overridden by `file` (when given) or the user's keys file (when it exists).
    pub fn load(file: Option<&Path>) -> Result<Keymap, UserError> {
        let mut map = Self::parse(DEFAULT_KEYS, Path::new("assets/keys.toml"))?;
        let user = file.map(Path::to_path_buf).or_else(|| user_file().filter(|p| p.exists()));
        if let Some(path) = user {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                UserError::new(
                    format!("cannot read the keys file {}: {e}", path.display()),
                    "fix the path given to --keys",
                )
            })?;
            let overrides = Self::parse(&text, &path)?;
            for (action, keys) in overrides.bindings {
                map.bindings.insert(action, keys);
            }
            map.keys = map.bindings.iter().flat_map(|(a, ks)| ks.iter().map(move |k| (*k, *a))).collect();
            if map.keys.len() != map.bindings.values().map(Vec::len).sum::<usize>() {
                return Err(UserError::new(
                    format!("the keys file {} binds one key to two actions", path.display()),
                    "give each key to one action only (the defaults are in pgshift's assets/keys.toml)",
                ));
            }
        }
        Ok(map)
    }

    pub fn defaults() -> Keymap {
        Self::parse(DEFAULT_KEYS, Path::new("assets/keys.toml")).expect("the embedded keys file parses")
    }

    fn parse(text: &str, path: &Path) -> Result<Keymap, UserError> {
        let fix = "write each line as action = [\"key\", ...], e.g. run-all = [\"a\"] (see assets/keys.toml)";
        let raw: BTreeMap<Action, Vec<String>> = toml::from_str(text).map_err(|e| {
            UserError::new(format!("keys file {}: {}{}", path.display(), toml_place(text, &e), e.message()), fix)
        })?;
        let mut keys = HashMap::new();
        let mut bindings = BTreeMap::new();
        for (action, names) in raw {
            let mut list = Vec::new();
            for name in names {
                let key = Key::parse(&name).map_err(|m| {
                    UserError::new(format!("keys file {}: {m} for {}", path.display(), action.name()), fix)
                })?;
                if let Some(other) = keys.insert(key, action) {
                    return Err(UserError::new(
                        format!(
                            "keys file {}: {name:?} is bound to both {} and {}",
                            path.display(),
                            other.name(),
                            action.name()
                        ),
                        "give each key to one action only",
                    ));
                }
                list.push(key);
            }
            bindings.insert(action, list);
        }
        Ok(Keymap { keys, bindings })
    }

    pub fn action(&self, e: &KeyEvent) -> Option<Action> {
        self.keys.get(&Key::from_event(e)).copied()
    }

    /// The keys of an action as the help writes them (`a`, `↑/k`).
    pub fn keys_of(&self, action: Action) -> String {
        self.bindings.get(&action).map(|ks| ks.iter().map(Key::label).collect::<Vec<_>>().join("/")).unwrap_or_default()
    }

    /// Every bound action, in a stable order.
    pub fn actions(&self) -> impl Iterator<Item = Action> + '_ {
        self.bindings.keys().copied()
    }
}

fn user_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("pgshift").join("keys.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, m: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, m)
    }

    #[test]
    fn defaults_bind_every_action_and_shifted_letters_match() {
        let map = Keymap::defaults();
        assert_eq!(map.actions().count(), 25, "every action has a default key");
        assert_eq!(map.action(&key(KeyCode::Char('C'), KeyModifiers::SHIFT)), Some(Action::Cutover));
        assert_eq!(map.action(&key(KeyCode::Char('a'), KeyModifiers::NONE)), Some(Action::RunAll));
        assert_eq!(map.action(&key(KeyCode::Char('G'), KeyModifiers::SHIFT)), Some(Action::Bottom));
        assert_eq!(map.action(&key(KeyCode::Char('c'), KeyModifiers::CONTROL)), Some(Action::Interrupt));
        assert_eq!(map.action(&key(KeyCode::Char('?'), KeyModifiers::SHIFT)), Some(Action::Help));
        assert_eq!(map.keys_of(Action::Up), "↑/k");
    }

    #[test]
    fn a_user_file_rebinds_and_mistakes_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        std::fs::write(&path, "run-all = [\"ctrl-r\"]\nquit = [\"Q\"]\n").unwrap();
        let map = Keymap::load(Some(&path)).unwrap();
        assert_eq!(map.action(&key(KeyCode::Char('r'), KeyModifiers::CONTROL)), Some(Action::RunAll));
        assert_eq!(map.action(&key(KeyCode::Char('a'), KeyModifiers::NONE)), None);
        assert_eq!(map.action(&key(KeyCode::Char('Q'), KeyModifiers::SHIFT)), Some(Action::Quit));

        std::fs::write(&path, "run-everything = [\"a\"]\n").unwrap();
        let e = Keymap::load(Some(&path)).unwrap_err();
        assert!(e.message.contains("keys.toml") && e.message.contains("line 1"), "{e}");
        std::fs::write(&path, "run-all = [\"hyper-x\"]\n").unwrap();
        assert!(Keymap::load(Some(&path)).unwrap_err().message.contains("unknown key"));
        std::fs::write(&path, "run-all = [\"q\"]\n").unwrap(); // q stays quit's too
        assert!(Keymap::load(Some(&path)).unwrap_err().message.contains("two actions"));
    }
}
