//! JSON text laid out for a person to read, without parsing it: the approvals console shows a call's arguments
//! with it, and `pin` the tool definitions it diffs. Hand-written because serde_json's pretty printer only
//! prints values it has parsed.

/// Pretty-prints JSON text that serde_json has already accepted, two spaces per level, one member or element a
/// line, without parsing its numbers or strings (a parse into `serde_json::Value` would round numbers beyond
/// 2^53). Only white space changes (outside strings), so the value and its canonical form stay the same.
pub fn pretty(json: &str) -> String {
    let mut out = String::with_capacity(json.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = json.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.extend(std::iter::repeat_n("  ", depth));
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                // Skip whitespace to see whether the container is empty: `{}` and `[]` stay on one line.
                while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('}' | ']')) {
                    if let Some(close) = chars.next() {
                        out.push(close);
                    }
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::pretty;
    use serde_json::Value;

    #[test]
    fn pretty_keeps_the_text() {
        let raw =
            r#"{"a":[1,2,{"b":"x, y: {z}","c":[]}],"big":12345678901234567890,"e":{} ,"s":"q\"{"}"#;
        let p = pretty(raw);
        assert_eq!(
            p,
            "{\n  \"a\": [\n    1,\n    2,\n    {\n      \"b\": \"x, y: {z}\",\n      \"c\": []\n    }\n  ],\n  \
             \"big\": 12345678901234567890,\n  \"e\": {},\n  \"s\": \"q\\\"{\"\n}"
        );
        let back: Value = serde_json::from_str(&p).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(raw).unwrap());
        assert_eq!(pretty("{}"), "{}");
        assert_eq!(pretty("\"x\""), "\"x\"");
    }

    #[test]
    fn pretty_keeps_the_value() {
        let c = r#"{"a":[],"b":{},"c":[1,{"d":"x,{y}:\"z\\"}],"e":"é"}"#;
        let p = pretty(c);
        assert_eq!(
            p,
            "{\n  \"a\": [],\n  \"b\": {},\n  \"c\": [\n    1,\n    {\n      \"d\": \"x,{y}:\\\"z\\\\\"\n    }\n  ],\n  \"e\": \"é\"\n}"
        );
        assert_eq!(mcp_policy::jcs::canonical(&p).unwrap(), c);
    }
}
