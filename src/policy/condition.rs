//! Conditions on a call's arguments: `{"path": "args.a.b", "op": OP, "value": V}`.

use serde_json::Value;

/// A compiled condition operator with its operand.
#[derive(Debug, Clone)]
pub enum Op {
    Eq(Value),
    Neq(Value),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Lt(f64),
    Lte(f64),
    Gt(f64),
    Gte(f64),
    Regex(regex_lite::Regex),
    Contains(Value),
    Exists(bool),
}

/// Every operator name, in the order the docs list them.
pub const OP_NAMES: &[&str] = &[
    "eq", "neq", "in", "not_in", "lt", "lte", "gt", "gte", "regex", "contains", "exists",
];

/// One compiled condition.
#[derive(Debug, Clone)]
pub struct Condition {
    /// As written in the policy, e.g. `args.max_results`.
    pub path: String,
    /// The segments after `args`: object keys, or array indexes when the value there is an array.
    pub segments: Vec<String>,
    pub op: Op,
}

impl Condition {
    /// Looks the path up in the call's arguments (`None` when there are none).
    pub fn lookup<'v>(&self, args: Option<&'v Value>) -> Option<&'v Value> {
        lookup(args, &self.segments)
    }

    /// True when the condition holds for these arguments. A path whose key is absent but present in another
    /// letter case (`Filter` for `filter`) fails every op, negations included: a server that matches keys
    /// case-insensitively would read it, so "absent" cannot be trusted.
    pub fn holds(&self, args: Option<&Value>) -> bool {
        let actual = match lookup_checked(args, &self.segments) {
            Lookup::Found(v) => Some(v),
            Lookup::Missing => None,
            Lookup::Ambiguous => return false,
        };
        match (&self.op, actual) {
            (Op::Exists(want), a) => a.is_some() == *want,
            (Op::Neq(_), None) | (Op::NotIn(_), None) => true,
            (_, None) => false,
            (Op::Eq(v), Some(a)) => json_eq(a, v),
            (Op::Neq(v), Some(a)) => !json_eq(a, v),
            (Op::In(vs), Some(a)) => vs.iter().any(|v| json_eq(a, v)),
            (Op::NotIn(vs), Some(a)) => !vs.iter().any(|v| json_eq(a, v)),
            (Op::Lt(n), Some(a)) => a.as_f64().is_some_and(|x| x < *n),
            (Op::Lte(n), Some(a)) => a.as_f64().is_some_and(|x| x <= *n),
            (Op::Gt(n), Some(a)) => a.as_f64().is_some_and(|x| x > *n),
            (Op::Gte(n), Some(a)) => a.as_f64().is_some_and(|x| x >= *n),
            (Op::Regex(re), Some(a)) => a.as_str().is_some_and(|s| re.is_match(s)),
            (Op::Contains(v), Some(Value::String(s))) => {
                v.as_str().is_some_and(|needle| s.contains(needle))
            }
            (Op::Contains(v), Some(Value::Array(items))) => items.iter().any(|i| json_eq(i, v)),
            (Op::Contains(_), Some(_)) => false,
        }
    }

    /// A short human description, e.g. `args.max_results lte 100`.
    pub fn describe(&self) -> String {
        let (name, operand) = match &self.op {
            Op::Eq(v) => ("eq", v.to_string()),
            Op::Neq(v) => ("neq", v.to_string()),
            Op::In(v) => ("in", Value::Array(v.clone()).to_string()),
            Op::NotIn(v) => ("not_in", Value::Array(v.clone()).to_string()),
            Op::Lt(n) => ("lt", n.to_string()),
            Op::Lte(n) => ("lte", n.to_string()),
            Op::Gt(n) => ("gt", n.to_string()),
            Op::Gte(n) => ("gte", n.to_string()),
            Op::Regex(r) => ("regex", Value::String(r.as_str().to_owned()).to_string()),
            Op::Contains(v) => ("contains", v.to_string()),
            Op::Exists(b) => ("exists", b.to_string()),
        };
        format!("{} {} {}", self.path, name, operand)
    }
}

/// Follows `segments` (object keys, or indexes into arrays) from the arguments object.
pub fn lookup<'v>(args: Option<&'v Value>, segments: &[String]) -> Option<&'v Value> {
    let mut cur = args?;
    for seg in segments {
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// The outcome of following a path through the arguments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Lookup<'v> {
    Found(&'v Value),
    Missing,
    /// A key on the path is absent, but an object there has a key equal to it ignoring case.
    Ambiguous,
}

/// Like [`lookup`], telling a plainly missing key from one present in another letter case.
pub fn lookup_checked<'v>(args: Option<&'v Value>, segments: &[String]) -> Lookup<'v> {
    let Some(mut cur) = args else {
        return Lookup::Missing;
    };
    for seg in segments {
        cur = match cur {
            Value::Object(m) => match m.get(seg) {
                Some(v) => v,
                None if m.keys().any(|k| crate::json::keys_collide(k, seg)) => {
                    return Lookup::Ambiguous
                }
                None => return Lookup::Missing,
            },
            Value::Array(a) => match seg.parse::<usize>().ok().and_then(|i| a.get(i)) {
                Some(v) => v,
                None => return Lookup::Missing,
            },
            _ => return Lookup::Missing,
        };
    }
    Lookup::Found(cur)
}

/// JSON equality where numbers compare by value (`1 == 1.0`).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                (Some(p), Some(q), _, _) => p == q,
                (_, _, Some(p), Some(q)) => p == q,
                _ => x.as_f64() == y.as_f64(),
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cond(path: &str, op: Op) -> Condition {
        let segments = path.split('.').skip(1).map(str::to_owned).collect();
        Condition {
            path: path.to_owned(),
            segments,
            op,
        }
    }

    #[test]
    fn every_op() {
        let args = json!({"n": 5, "f": 2.5, "s": "hello world", "list": ["a", 1], "obj": {"deep": [10, 20]}, "nul": null});
        let a = Some(&args);
        let yes = |c: Condition| assert!(c.holds(a), "{}", c.describe());
        let no = |c: Condition| assert!(!c.holds(a), "{}", c.describe());
        yes(cond("args.n", Op::Eq(json!(5.0))));
        no(cond("args.n", Op::Eq(json!("5"))));
        yes(cond("args.n", Op::Neq(json!(6))));
        yes(cond(
            "args.s",
            Op::In(vec![json!("x"), json!("hello world")]),
        ));
        no(cond("args.s", Op::NotIn(vec![json!("hello world")])));
        yes(cond("args.n", Op::Lt(6.0)));
        no(cond("args.n", Op::Lt(5.0)));
        yes(cond("args.n", Op::Lte(5.0)));
        yes(cond("args.f", Op::Gt(2.0)));
        no(cond("args.f", Op::Gte(3.0)));
        no(cond("args.s", Op::Gt(0.0)));
        yes(cond(
            "args.s",
            Op::Regex(regex_lite::Regex::new("^hel+o").unwrap()),
        ));
        no(cond(
            "args.n",
            Op::Regex(regex_lite::Regex::new(".*").unwrap()),
        ));
        yes(cond("args.s", Op::Contains(json!("lo wo"))));
        yes(cond("args.list", Op::Contains(json!(1))));
        no(cond("args.list", Op::Contains(json!("b"))));
        no(cond("args.n", Op::Contains(json!(5))));
        yes(cond("args.obj.deep.1", Op::Eq(json!(20))));
        yes(cond("args.nul", Op::Exists(true)));
        yes(cond("args.nope", Op::Exists(false)));
        no(cond("args.nope", Op::Exists(true)));
    }

    #[test]
    fn case_variant_keys_are_not_absent() {
        // A Go handler binds "Filter" to "filter": the negations must not treat it as missing.
        let args = json!({"Filter": "x", "outer": {"RUN_ID": "prod"}});
        for c in [
            cond("args.filter", Op::Exists(false)),
            cond("args.filter", Op::Neq(json!("y"))),
            cond("args.filter", Op::NotIn(vec![json!("y")])),
            cond("args.outer.run_id", Op::Neq(json!("prod"))),
            cond("args.filter", Op::Eq(json!("x"))),
        ] {
            assert!(!c.holds(Some(&args)), "{}", c.describe());
        }
        assert!(cond("args.other", Op::Exists(false)).holds(Some(&args)));
    }

    #[test]
    fn missing_paths_fail_all_but_negations() {
        let args = json!({});
        for op in [
            Op::Eq(json!(1)),
            Op::In(vec![json!(1)]),
            Op::Lt(1.0),
            Op::Contains(json!(1)),
        ] {
            assert!(!cond("args.x", op).holds(Some(&args)));
        }
        assert!(cond("args.x", Op::Neq(json!(1))).holds(Some(&args)));
        assert!(cond("args.x", Op::NotIn(vec![json!(1)])).holds(None));
        assert!(cond("args.x.y", Op::Exists(false)).holds(Some(&json!({"x": 3}))));
    }
}
