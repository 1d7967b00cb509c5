//! routes.toml for a test, as a builder; and where `payroute check` says
//! its errors are.
//!
//! The builder writes the same TOML a person would, table by table, so a
//! failing test's config (printed by [`crate::Proxy`]) reads like a real
//! one. Lines inside a table are the test's own text: the builder knows the
//! layout of the file, not its keys, so nothing here hides what a test
//! configures.

use std::fmt;

/// A whole routes.toml. Ports are chosen by the OS, exploration and the
/// sharing of close scores are off (routing is deterministic unless a test
/// turns them on), and merchants get a rate limit no test reaches unless
/// they set their own.
#[derive(Clone, Debug)]
pub struct Config {
    listen: String,
    server: String,
    server_tls: Option<String>,
    request: Option<String>,
    routing: String,
    state: Option<String>,
    /// Other top-level tables (`[notify]`, `[sweeper]`, `[journal]`), in order.
    tables: Vec<(String, String)>,
    channels: Vec<Table>,
    merchants: Vec<Table>,
    /// `[[rule]]` bodies, in order.
    rules: Vec<String>,
}

/// A `[[channel]]` (id, url, lines) or `[[merchant]]` (id, lines).
#[derive(Clone, Debug)]
struct Table {
    id: String,
    url: Option<String>,
    lines: String,
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}

/// Appends `lines` (one or several, `\n`-separated) to a table's body.
fn append(body: &mut String, lines: &str) {
    if !lines.is_empty() {
        body.push_str(lines);
        body.push('\n');
    }
}

impl Config {
    /// `[server]` on `127.0.0.1:0` (both listeners), `[routing]` without
    /// exploration; no channel, no merchant.
    pub fn new() -> Config {
        Config {
            listen: "127.0.0.1:0".into(),
            server: String::new(),
            server_tls: None,
            request: None,
            routing: String::new(),
            state: None,
            tables: Vec::new(),
            channels: Vec::new(),
            merchants: Vec::new(),
            rules: Vec::new(),
        }
    }

    /// Channel `first` (fee 0.1) and channel `second` (fee 0.9), as
    /// `(id, url)`, and merchant m-1: `first` is tried before `second`.
    pub fn pair(first: (&str, &str), second: (&str, &str)) -> Config {
        Config::new()
            .channel(first.0, first.1, "fee_percent = 0.1")
            .channel(second.0, second.1, "fee_percent = 0.9")
            .merchant("m-1", "")
    }

    /// One channel and merchant m-1.
    pub fn single(id: &str, url: &str) -> Config {
        Config::new().channel(id, url, "").merchant("m-1", "")
    }

    /// The payment listener's address (default `127.0.0.1:0`).
    pub fn listen(mut self, addr: &str) -> Config {
        self.listen = addr.into();
        self
    }

    /// More `[server]` lines.
    pub fn server(mut self, lines: &str) -> Config {
        append(&mut self.server, lines);
        self
    }

    /// `[server.tls]` lines (TLS on the payment listener).
    pub fn server_tls(mut self, lines: &str) -> Config {
        append(self.server_tls.get_or_insert_with(String::new), lines);
        self
    }

    /// `[request]` lines.
    pub fn request(mut self, lines: &str) -> Config {
        append(self.request.get_or_insert_with(String::new), lines);
        self
    }

    /// More `[routing]` lines.
    pub fn routing(mut self, lines: &str) -> Config {
        append(&mut self.routing, lines);
        self
    }

    /// `[state]` lines.
    pub fn state(mut self, lines: &str) -> Config {
        append(self.state.get_or_insert_with(String::new), lines);
        self
    }

    /// `[sweeper]` lines.
    pub fn sweeper(self, lines: &str) -> Config {
        self.table("sweeper", lines)
    }

    /// `[notify]` lines.
    pub fn notify(self, lines: &str) -> Config {
        self.table("notify", lines)
    }

    /// `[journal]` lines.
    pub fn journal(self, lines: &str) -> Config {
        self.table("journal", lines)
    }

    /// Lines of the top-level table `[name]` (appended if it exists).
    fn table(mut self, name: &str, lines: &str) -> Config {
        match self.tables.iter_mut().find(|(n, _)| n == name) {
            Some((_, body)) => append(body, lines),
            None => {
                let mut body = String::new();
                append(&mut body, lines);
                self.tables.push((name.into(), body));
            }
        }
        self
    }

    /// A `[[channel]]` with `lines` besides its id and url.
    pub fn channel(mut self, id: &str, url: &str, lines: &str) -> Config {
        let mut body = String::new();
        append(&mut body, lines);
        self.channels.push(Table {
            id: id.into(),
            url: Some(url.into()),
            lines: body,
        });
        self
    }

    /// More lines for the channel(s) with this id.
    ///
    /// # Panics
    /// If there is no such channel: the test is wrong.
    pub fn amend(mut self, id: &str, lines: &str) -> Config {
        let mut found = false;
        for c in self.channels.iter_mut().filter(|c| c.id == id) {
            append(&mut c.lines, lines);
            found = true;
        }
        assert!(found, "no channel {id} to amend");
        self
    }

    /// A `[[rule]]` with these lines, after the rules so far.
    pub fn rule(mut self, lines: &str) -> Config {
        let mut body = String::new();
        append(&mut body, lines);
        self.rules.push(body);
        self
    }

    /// A `[[merchant]]` with `lines` besides its id. Unless `lines` set
    /// them, `rate_per_sec` and `burst` are high enough never to interfere.
    pub fn merchant(mut self, id: &str, lines: &str) -> Config {
        let mut body = String::new();
        if !lines.contains("rate_per_sec") {
            body.push_str("rate_per_sec = 100000\n");
        }
        if !lines.contains("burst") {
            body.push_str("burst = 100000\n");
        }
        append(&mut body, lines);
        self.merchants.push(Table {
            id: id.into(),
            url: None,
            lines: body,
        });
        self
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "[server]\nlisten = \"{}\"\nadmin_listen = \"127.0.0.1:0\"\n{}",
            self.listen, self.server
        )?;
        if let Some(tls) = &self.server_tls {
            writeln!(f, "[server.tls]\n{tls}")?;
        }
        if let Some(request) = &self.request {
            writeln!(f, "[request]\n{request}")?;
        }
        let sharing = if self.routing.contains("share_margin") {
            ""
        } else {
            "share_margin = 0.0\n"
        };
        writeln!(f, "[routing]\nexplore_share = 0.0\n{sharing}{}", self.routing)?;
        if let Some(state) = &self.state {
            writeln!(f, "[state]\n{state}")?;
        }
        for (name, body) in &self.tables {
            writeln!(f, "[{name}]\n{body}")?;
        }
        for c in &self.channels {
            let url = c.url.as_deref().unwrap_or_default();
            writeln!(f, "[[channel]]\nid = \"{}\"\nurl = \"{url}\"\n{}", c.id, c.lines)?;
        }
        for r in &self.rules {
            writeln!(f, "[[rule]]\n{r}")?;
        }
        for m in &self.merchants {
            writeln!(f, "[[merchant]]\nid = \"{}\"\n{}", m.id, m.lines)?;
        }
        Ok(())
    }
}

/// Extracts `(line, column)` pairs from `payroute check` errors, accepting
/// both `FILE:LINE:COL: message` and `line N, column M`.
pub fn error_locations(stderr: &str, file: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for line in stderr.lines() {
        if let Some(pos) = line.find(file) {
            let rest = &line[pos + file.len()..];
            let mut parts = rest.splitn(4, ':');
            if parts.next() == Some("") {
                if let (Some(l), Some(c)) = (parts.next(), parts.next()) {
                    if let (Ok(l), Ok(c)) = (l.trim().parse(), c.trim().parse()) {
                        out.push((l, c));
                        continue;
                    }
                }
            }
        }
        if let Some(pos) = line.find("line ") {
            let rest = &line[pos + 5..];
            let l: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if let Some(cpos) = rest.find("column ") {
                let c: String = rest[cpos + 7..].chars().take_while(char::is_ascii_digit).collect();
                if let (Ok(l), Ok(c)) = (l.parse(), c.parse()) {
                    out.push((l, c));
                }
            }
        }
    }
    out
}

/// 1-based line number of the first line of `text` containing `needle`
/// at or after line `from`.
///
/// # Panics
/// If no line contains it: the test is wrong.
pub fn line_of(text: &str, needle: &str, from: usize) -> usize {
    text.lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .find(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in config"))
}
