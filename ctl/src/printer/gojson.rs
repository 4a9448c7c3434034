//! The JSON Go's `encoding/json` writes for etcd's generated structs: fields in struct order,
//! `omitempty` dropping zero values, `[]byte` as standard base64, 64-bit integers as plain
//! numbers, and Go 1.19's string escaping (HTML characters and U+2028/U+2029 as `\uXXXX`).

use crate::gofmt;

pub enum Json {
    Object(Vec<(&'static str, Json)>),
    Array(Vec<Json>),
    Str(Vec<u8>),
    /// A number, already formatted.
    Number(String),
    Bool(bool),
    Null,
}

impl Json {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Json::Object(fields) => {
                out.push('{');
                for (i, (name, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_string(out, name.as_bytes());
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Json::Str(s) => write_string(out, s),
            Json::Number(n) => out.push_str(n),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Null => out.push_str("null"),
        }
    }
}

fn write_string(out: &mut String, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for chunk in s.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 || matches!(c, '<' | '>' | '&') => {
                    let b = c as u8;
                    out.push_str("\\u00");
                    out.push(HEX[(b >> 4) as usize] as char);
                    out.push(HEX[(b & 0xf) as usize] as char);
                }
                '\u{2028}' => out.push_str("\\u2028"),
                '\u{2029}' => out.push_str("\\u2029"),
                c => out.push(c),
            }
        }
        for _ in chunk.invalid() {
            out.push_str("\\ufffd");
        }
    }
    out.push('"');
}

/// Builds a struct's object, applying `omitempty` where the Go field has it.
#[derive(Default)]
pub struct Object(Vec<(&'static str, Json)>);

impl Object {
    pub fn new() -> Self {
        Object::default()
    }

    pub fn build(self) -> Json {
        Json::Object(self.0)
    }

    /// A field without `omitempty`.
    pub fn field(mut self, name: &'static str, value: Json) -> Self {
        self.0.push((name, value));
        self
    }

    pub fn u64(self, name: &'static str, v: u64) -> Self {
        if v == 0 {
            self
        } else {
            self.field(name, Json::Number(v.to_string()))
        }
    }

    pub fn i64(self, name: &'static str, v: i64) -> Self {
        if v == 0 {
            self
        } else {
            self.field(name, Json::Number(v.to_string()))
        }
    }

    pub fn bool(self, name: &'static str, v: bool) -> Self {
        if v {
            self.field(name, Json::Bool(true))
        } else {
            self
        }
    }

    pub fn bytes(self, name: &'static str, v: &[u8]) -> Self {
        if v.is_empty() {
            self
        } else {
            self.field(name, Json::Str(gofmt::base64_std(v).into_bytes()))
        }
    }

    pub fn string(self, name: &'static str, v: &str) -> Self {
        if v.is_empty() {
            self
        } else {
            self.field(name, Json::Str(v.as_bytes().to_vec()))
        }
    }

    pub fn strings(self, name: &'static str, v: &[String]) -> Self {
        if v.is_empty() {
            self
        } else {
            self.field(
                name,
                Json::Array(v.iter().map(|s| Json::Str(s.as_bytes().to_vec())).collect()),
            )
        }
    }

    pub fn object(self, name: &'static str, v: Option<Json>) -> Self {
        match v {
            Some(j) => self.field(name, j),
            None => self,
        }
    }

    pub fn array(self, name: &'static str, v: Vec<Json>) -> Self {
        if v.is_empty() {
            self
        } else {
            self.field(name, Json::Array(v))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_escape_like_go_1_19() {
        let j = Json::Str(b"a\"b\\c\n<tag>&\x08\x7f\xff\xe2\x80\xa8".to_vec());
        assert_eq!(
            j.encode(),
            "\"a\\\"b\\\\c\\n\\u003ctag\\u003e\\u0026\\u0008\x7f\\ufffd\\u2028\""
        );
    }

    #[test]
    fn omitempty_drops_zero_values() {
        let j = Object::new()
            .u64("a", 0)
            .i64("b", -1)
            .bool("c", false)
            .bytes("d", b"foo")
            .string("e", "")
            .build();
        assert_eq!(j.encode(), "{\"b\":-1,\"d\":\"Zm9v\"}");
    }
}
