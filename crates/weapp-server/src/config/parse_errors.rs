//! A TOML error as one line that names the key and never quotes a value (a value may be a
//! secret), with a "did you mean" for a misspelt key.

/// `line L, column C (`key = …`): message` — toml's own Display draws a multi-line caret
/// diagram. The offending line's value is never quoted, and quoted values in the message are
/// elided: either may be a secret (a password in a URL, a data key given as a string).
pub(crate) fn one_line(text: &str, e: &toml::de::Error) -> String {
    if let Some(m) = unknown_key(text, e) {
        return m;
    }
    let message = redact_quoted(e.message().trim()).replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = before.len() - line_start + 1;
            // The key (or table header) of the offending line, never its value.
            let source = text[line_start..].lines().next().unwrap_or("").trim();
            let shown = if source.starts_with('[') {
                Some(source.to_owned())
            } else {
                source
                    .split_once('=')
                    .map(|(key, _)| format!("{} = …", key.trim()))
            };
            match shown {
                Some(s) => format!("line {line}, column {column} (`{s}`): {message}"),
                None => format!("line {line}, column {column}: {message}"),
            }
        }
        None => message,
    }
}

/// `text` with every double-quoted value replaced by `"…"`.
pub(crate) fn redact_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for c in text.chars() {
        if c == '"' {
            if inside {
                out.push_str("…\"");
            } else {
                out.push('"');
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    out
}

/// The 1-based line of byte `offset` in `text`, and that line.
pub(crate) fn line_at(text: &str, offset: usize) -> (usize, &str) {
    let before = &text[..offset.min(text.len())];
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    (before.matches('\n').count() + 1, line)
}

/// serde's `unknown field `x`, expected one of `a`, `b`, …` rewritten as one short line:
/// where, which key, and the known key it most resembles — instead of every key there is.
/// `None` for any other error.
pub(crate) fn unknown_key(text: &str, e: &toml::de::Error) -> Option<String> {
    let rest = e.message().trim().strip_prefix("unknown field `")?;
    let (name, rest) = rest.split_once('`')?;
    // The known keys are the other backticked words (none after "there are no fields").
    let known: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let suggestion = did_you_mean(name, known.iter().copied());
    let (line, source) = match e.span() {
        Some(span) => {
            let (n, source) = line_at(text, span.start);
            (format!("line {n}: "), source.trim())
        }
        None => (String::new(), ""),
    };
    if source.starts_with('[') {
        // A table header: `[[app]]` for `[[apps]]`, `[apps.pussh]` for `[apps.push]`.
        let header = source.split('#').next().unwrap_or(source).trim();
        return Some(match suggestion {
            Some(s) => match header.rfind(name) {
                Some(i) => format!(
                    "{line}unknown table {header} — did you mean {}{s}{}?",
                    &header[..i],
                    &header[i + name.len()..]
                ),
                None => format!("{line}unknown table {header} — did you mean \"{s}\"?"),
            },
            None => format!("{line}unknown table {header}"),
        });
    }
    // The table the key is in: the nearest header above it (when the key starts its line,
    // i.e. is not inside an inline table).
    let starts_line = source.trim_start_matches('"').starts_with(name);
    let section = e
        .span()
        .filter(|_| starts_line)
        .and_then(|span| {
            text[..span.start.min(text.len())]
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| l.starts_with('['))
        })
        .map(|h| {
            let h = h.split('#').next().unwrap_or(h).trim();
            format!(" in {h}")
        })
        .unwrap_or_default();
    Some(match suggestion {
        Some(s) => format!("{line}unknown key \"{name}\"{section} — did you mean \"{s}\"?"),
        // A short list helps; the sixty top-level keys do not (the README has the table).
        None if !known.is_empty() && known.len() <= 8 => format!(
            "{line}unknown key \"{name}\"{section} (known keys: {})",
            known.join(", ")
        ),
        None => format!("{line}unknown key \"{name}\"{section}"),
    })
}

/// The Damerau–Levenshtein distance (optimal string alignment: insertions, deletions,
/// substitutions and swaps of two neighbours each cost one).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The candidate closest to `word` — ignoring case, and `-` for `_` — if it is close enough to
/// be a misspelling of it (a third of its length, at least one edit and at most three); the
/// first of equally close ones.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let word = norm(word);
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&word, &norm(c)), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The tables written with the wrong brackets, which serde would only call "invalid type":
/// `[apps]` where `[[apps]]` (an array of tables) is meant, and `[[apps.push]]` for
/// `[apps.push]`.
pub(crate) fn shape_hint(table: &toml::Table, text: &str) -> Option<String> {
    // The first line defining `key` (a header `[key]`, `[key.…]`, `[[key]]`, or `key = `).
    let line_of = |key: &str| {
        text.lines()
            .position(|l| {
                let l: String = l.chars().filter(|c| !c.is_whitespace()).collect();
                let l = l.trim_start_matches('[');
                l.strip_prefix(key)
                    .is_some_and(|r| r.starts_with([']', '.', '=']))
            })
            .map_or(String::new(), |i| format!("line {}: ", i + 1))
    };
    for (list, one) in [
        ("apps", "app"),
        ("clients", "broker client"),
        ("admins", "administrator"),
        ("platforms", "platform"),
        ("merchants", "merchant"),
    ] {
        if matches!(table.get(list), Some(toml::Value::Table(_))) {
            return Some(format!(
                "{}{list} must be an array of tables: write [[{list}]] (double brackets), one block per {one}, not [{list}]",
                line_of(list)
            ));
        }
    }
    if let Some(toml::Value::Array(apps)) = table.get("apps") {
        if apps
            .iter()
            .any(|a| matches!(a.get("push"), Some(toml::Value::Array(_))))
        {
            return Some(format!(
                "{}an app has one push receiver: write [apps.push] (single brackets), not [[apps.push]]",
                line_of("apps.push")
            ));
        }
    }
    None
}
