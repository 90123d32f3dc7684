//! Chat templates: the file's Jinja `tokenizer.chat_template` rendered with
//! minijinja (set up like Hugging Face's `apply_chat_template`: trim_blocks,
//! lstrip_blocks, Python string methods, `raise_exception`), or Mistral's
//! instruct format when the file has none.

use std::sync::Arc;

use minijinja::{context, Environment, Value};
use mistral_gguf::{keys, Metadata};
use serde::{Deserialize, Serialize};

use crate::vocab::{ModelKind, TokenKind};
use crate::TokenizerError;

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    pub content: String,
    /// The functions an assistant turn calls (its `content` is then
    /// usually empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// A `tool` turn: the id of the call whose result `content` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// A function call of an assistant turn. Templates see it in OpenAI's
/// shape: `{"id", "type": "function", "function": {"name", "arguments"}}`,
/// the arguments as a JSON value (as Hugging Face's templates expect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments, JSON text (an object).
    pub arguments: String,
}

impl Serialize for ToolCall {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let args = serde_json::from_str::<serde_json::Value>(&self.arguments)
            .unwrap_or_else(|_| serde_json::Value::String(self.arguments.clone()));
        serde_json::json!({
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": args},
        })
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ToolCall {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let f = &v["function"];
        let arguments = match &f["arguments"] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        Ok(ToolCall {
            id: v["id"].as_str().unwrap_or_default().to_string(),
            name: f["name"].as_str().unwrap_or_default().to_string(),
            arguments,
        })
    }
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
    /// An assistant turn that calls functions.
    pub fn tool_calls(calls: Vec<ToolCall>) -> Message {
        Message {
            tool_calls: calls,
            ..Message::new("assistant", "")
        }
    }
    /// A function's result, answering the call `call_id`.
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            tool_call_id: Some(call_id.into()),
            ..Message::new("tool", content)
        }
    }
    pub fn system(content: impl Into<String>) -> Message {
        Message::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Message {
        Message::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Message {
        Message::new("assistant", content)
    }
}

/// Mistral's instruct formats (mistral-common's tokenizer versions), used when
/// a file carries no template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MistralFormat {
    /// SentencePiece v1 (Mistral 7B v0.1/v0.2, Mixtral 8x7B): `[INST]` is plain
    /// text, the system prompt goes before the first user message:
    /// `<s>[INST] {system}\n\n{user} [/INST] {assistant}</s>[INST] {user} [/INST]`.
    V1,
    /// SentencePiece v2/v3 (Mistral v0.3, Mixtral 8x22B): `[INST]`/`[/INST]` are
    /// control tokens, the system prompt goes before the *last* user message:
    /// `<s>[INST] {user}[/INST] {assistant}</s>[INST] {system}\n\n{user}[/INST]`.
    V3,
    /// Tekken (byte-level BPE, Mistral NeMo): as V3 without the spaces.
    Tekken,
}

impl MistralFormat {
    /// The format matching a vocabulary: control `[INST]` means v3 (or tekken
    /// for byte-level BPE), else v1.
    pub fn detect(md: &Metadata) -> Result<MistralFormat, TokenizerError> {
        let tokens = md.get_string_array(keys::TOKENIZER_TOKENS)?;
        let types = md.opt(keys::TOKENIZER_TOKEN_TYPE, Metadata::get_i32_array)?;
        let inst_is_control = tokens.iter().position(|t| t == "[INST]").is_some_and(|i| {
            types
                .as_ref()
                .and_then(|t| t.get(i))
                .map(|&t| TokenKind::from_gguf(t))
                == Some(TokenKind::Control)
        });
        if !inst_is_control {
            return Ok(MistralFormat::V1);
        }
        let model = ModelKind::from_name(md.get_str(keys::TOKENIZER_MODEL)?)?;
        Ok(match model {
            ModelKind::SentencePiece => MistralFormat::V3,
            ModelKind::ByteLevelBpe => MistralFormat::Tekken,
        })
    }

    /// The format as a Jinja template.
    pub fn source(self) -> &'static str {
        match self {
            MistralFormat::V1 => MISTRAL_V1,
            MistralFormat::V3 => MISTRAL_V3,
            MistralFormat::Tekken => MISTRAL_TEKKEN,
        }
    }
}

const ALTERNATE: &str = "Conversation roles must alternate user/assistant/user/assistant/... after an optional system message";
const ROLES: &str = "Only system, user and assistant roles are supported";

macro_rules! mistral_template {
    ($system_test:literal, $open:literal, $close:literal, $answer:literal) => {
        concat!(
            "{%- if messages and messages[0].role == 'system' %}",
            "{%- set system = messages[0].content %}{%- set turns = messages[1:] %}",
            "{%- else %}{%- set system = none %}{%- set turns = messages %}{%- endif %}",
            "{%- set last_user = namespace(i=-1) %}",
            "{%- for m in turns %}{%- if m.role == 'user' %}{%- set last_user.i = loop.index0 %}{%- endif %}{%- endfor %}",
            "{{- bos_token }}",
            "{%- for m in turns %}",
            "{%- if (m.role == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception(alternate) }}{%- endif %}",
            "{%- if m.role == 'user' %}",
            "{%- if system is not none and ", $system_test, " %}",
            "{{- '", $open, "' + system + '\\n\\n' + m.content + '", $close, "' }}",
            "{%- else %}{{- '", $open, "' + m.content + '", $close, "' }}{%- endif %}",
            "{%- elif m.role == 'assistant' %}{{- '", $answer, "' + m.content + eos_token }}",
            "{%- else %}{{ raise_exception(roles) }}{%- endif %}",
            "{%- endfor %}"
        )
    };
}

const MISTRAL_V1: &str = mistral_template!("loop.first", "[INST] ", " [/INST]", " ");
/// v3 and tekken, with function calling as mistral-common writes it: the
/// tools (`[AVAILABLE_TOOLS]`) before the last user turn, an assistant's
/// calls after `[TOOL_CALLS]`, results in `[TOOL_RESULTS]` (JSON as
/// Python's `json.dumps` writes it: the `pydumps` filters).
macro_rules! mistral_tools_template {
    ($sp:literal) => {
        concat!(
            "{%- if messages and messages[0].role == 'system' %}",
            "{%- set system = messages[0].content %}{%- set turns = messages[1:] %}",
            "{%- else %}{%- set system = none %}{%- set turns = messages %}{%- endif %}",
            "{%- set last_user = namespace(i=-1) %}",
            "{%- for m in turns %}{%- if m.role == 'user' %}{%- set last_user.i = loop.index0 %}{%- endif %}{%- endfor %}",
            "{%- set prev = namespace(role='assistant') %}",
            "{{- bos_token }}",
            "{%- for m in turns %}",
            "{%- if m.role == 'user' %}",
            "{%- if prev.role == 'user' %}{{ raise_exception(alternate) }}{%- endif %}",
            "{%- if tools and loop.index0 == last_user.i %}",
            "{{- '[AVAILABLE_TOOLS]", $sp, "' + tools|pydumps + '[/AVAILABLE_TOOLS]' }}{%- endif %}",
            "{%- if system is not none and loop.index0 == last_user.i %}",
            "{{- '[INST]", $sp, "' + system + '\n\n' + m.content + '[/INST]' }}",
            "{%- else %}{{- '[INST]", $sp, "' + m.content + '[/INST]' }}{%- endif %}",
            "{%- elif m.role == 'assistant' %}",
            "{%- if prev.role == 'assistant' %}{{ raise_exception(alternate) }}{%- endif %}",
            "{%- if m.tool_calls %}{{- '[TOOL_CALLS]", $sp, "' + m.tool_calls|pydumps_calls + eos_token }}",
            "{%- else %}{{- '", $sp, "' + m.content + eos_token }}{%- endif %}",
            "{%- elif m.role == 'tool' %}",
            "{%- if prev.role == 'user' %}{{ raise_exception(alternate) }}{%- endif %}",
            "{{- '[TOOL_RESULTS]", $sp, "' + m.content|pydumps_result(m.tool_call_id) + '[/TOOL_RESULTS]' }}",
            "{%- else %}{{ raise_exception(roles) }}{%- endif %}",
            "{%- set prev.role = m.role %}",
            "{%- endfor %}"
        )
    };
}

const MISTRAL_V3: &str = mistral_tools_template!(" ");
const MISTRAL_TEKKEN: &str = mistral_tools_template!("");

/// `json.dumps(value, ensure_ascii=False)`: `", "` and `": "` separators.
pub fn py_json_dumps(v: &serde_json::Value) -> String {
    struct Py;
    /// `", "` before every item but the first.
    fn sep<W: ?Sized + std::io::Write>(w: &mut W, first: bool) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    impl serde_json::ser::Formatter for Py {
        fn begin_array_value<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            sep(w, first)
        }
        fn begin_object_key<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            sep(w, first)
        }
        fn begin_object_value<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
        ) -> std::io::Result<()> {
            w.write_all(b": ")
        }
    }
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, Py);
    // Writing a Value to a Vec cannot fail.
    let _ = serde::Serialize::serialize(v, &mut ser);
    String::from_utf8(out).unwrap_or_default()
}

fn to_json(v: &Value) -> Result<serde_json::Value, minijinja::Error> {
    serde_json::to_value(v)
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string()))
}

/// `pydumps`: a value as `json.dumps` writes it.
fn pydumps(v: Value) -> Result<String, minijinja::Error> {
    Ok(py_json_dumps(&to_json(&v)?))
}

/// `pydumps_calls`: OpenAI-shaped calls as mistral-common lists them after
/// `[TOOL_CALLS]`: `[{"name", "arguments", "id"}]`.
fn pydumps_calls(calls: Value) -> Result<String, minijinja::Error> {
    let calls = to_json(&calls)?;
    let list: Vec<serde_json::Value> = calls
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    let mut o = serde_json::Map::new();
                    o.insert("name".into(), c["function"]["name"].clone());
                    o.insert("arguments".into(), c["function"]["arguments"].clone());
                    if c["id"].as_str().is_some_and(|id| !id.is_empty()) {
                        o.insert("id".into(), c["id"].clone());
                    }
                    serde_json::Value::Object(o)
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(py_json_dumps(&serde_json::Value::Array(list)))
}

/// `pydumps_result(call_id)`: a tool's result as mistral-common writes it:
/// `{"content": <the content, parsed when it is JSON>, "call_id": id}`.
fn pydumps_result(content: String, call_id: Option<String>) -> String {
    let content = serde_json::from_str::<serde_json::Value>(&content)
        .unwrap_or(serde_json::Value::String(content));
    let mut o = serde_json::Map::new();
    o.insert("content".into(), content);
    if let Some(id) = call_id {
        o.insert("call_id".into(), serde_json::Value::String(id));
    }
    py_json_dumps(&serde_json::Value::Object(o))
}

/// Instruction budget for one render: generous for any real conversation,
/// and it stops a template that would loop for ever.
const FUEL: u64 = 10_000_000;

/// A compiled chat template with the model's BOS/EOS strings.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Arc<Environment<'static>>,
    source: Arc<str>,
    bos: String,
    eos: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Marks an error raised by the template itself.
#[derive(Debug)]
struct Raised(String);

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

fn raise_exception(message: String) -> Result<Value, minijinja::Error> {
    Err(
        minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, message.clone())
            .with_source(Raised(message)),
    )
}

/// `strftime_now(format)`, which some Hugging Face templates call for today's
/// date: UTC, with the specifiers %Y %y %m %d %e %b %B %a %A %H %M %S %j %%.
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    strftime(secs, &format)
}

fn strftime(unix_secs: i64, format: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy_march = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy_march + 2) / 153;
    let day = doy_march - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let before: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = before[(month - 1) as usize] + day + i64::from(leap && month > 2);
    let weekday = DAYS[days.rem_euclid(7) as usize];
    let month_name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:>2}")),
            Some('b') => out.push_str(&month_name[..3]),
            Some('B') => out.push_str(month_name),
            Some('a') => out.push_str(&weekday[..3]),
            Some('A') => out.push_str(weekday),
            Some('H') => out.push_str(&format!("{:02}", secs / 3600)),
            Some('M') => out.push_str(&format!("{:02}", secs / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", secs % 60)),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

fn render_error(e: minijinja::Error) -> TokenizerError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        if let Some(r) = c.downcast_ref::<Raised>() {
            return TokenizerError::TemplateRaised(r.0.clone());
        }
        cause = c.source();
    }
    TokenizerError::TemplateRender(one_line(&e))
}

fn one_line(e: &minijinja::Error) -> String {
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

impl ChatTemplate {
    /// The file's `tokenizer.chat_template`, or the Mistral instruct format
    /// that matches its vocabulary when it has none.
    pub fn from_metadata(md: &Metadata) -> Result<ChatTemplate, TokenizerError> {
        let tokens = md.get_string_array(keys::TOKENIZER_TOKENS)?;
        let text_of =
            |key: &'static str| -> Result<String, TokenizerError> {
                Ok(match md.opt(key, Metadata::get_i64)? {
                    Some(id) if id >= 0 => tokens.get(id as usize).cloned().ok_or(
                        TokenizerError::SpecialIdOutOfRange {
                            key,
                            id,
                            n_vocab: tokens.len(),
                        },
                    )?,
                    _ => String::new(),
                })
            };
        let bos = text_of(keys::TOKENIZER_BOS_ID)?;
        let eos = text_of(keys::TOKENIZER_EOS_ID)?;
        match md.get(keys::TOKENIZER_CHAT_TEMPLATE) {
            Some(_) => {
                ChatTemplate::from_source(md.get_str(keys::TOKENIZER_CHAT_TEMPLATE)?, &bos, &eos)
            }
            None => Ok(ChatTemplate::mistral(
                MistralFormat::detect(md)?,
                &bos,
                &eos,
            )),
        }
    }

    /// Mistral's own format with function calling (v3 or tekken), for a
    /// vocabulary with its control tokens, whatever template the file
    /// carries; `None` for other vocabularies (v1's has no tool tokens).
    pub fn mistral_tools(md: &Metadata) -> Result<Option<ChatTemplate>, TokenizerError> {
        let tokens = md.get_string_array(keys::TOKENIZER_TOKENS)?;
        if !tokens.iter().any(|t| t == "[AVAILABLE_TOOLS]") {
            return Ok(None);
        }
        let format = MistralFormat::detect(md)?;
        if format == MistralFormat::V1 {
            return Ok(None);
        }
        let mut md = md.clone();
        md.remove(keys::TOKENIZER_CHAT_TEMPLATE);
        let t = ChatTemplate::from_metadata(&md)?;
        debug_assert_eq!(t.source(), format.source());
        Ok(Some(t))
    }

    /// A template from Jinja source (`--chat-template FILE`).
    pub fn from_source(source: &str, bos: &str, eos: &str) -> Result<ChatTemplate, TokenizerError> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| TokenizerError::TemplateSyntax(one_line(&e)))?;
        env.set_syntax(syntax);
        env.set_fuel(Some(FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("pydumps", pydumps);
        env.add_filter("pydumps_calls", pydumps_calls);
        env.add_filter("pydumps_result", pydumps_result);
        env.add_global("alternate", ALTERNATE);
        env.add_global("roles", ROLES);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| TokenizerError::TemplateSyntax(one_line(&e)))?;
        Ok(ChatTemplate {
            env: Arc::new(env),
            source: source.into(),
            bos: bos.to_string(),
            eos: eos.to_string(),
        })
    }

    /// Mistral's instruct format as a template.
    pub fn mistral(format: MistralFormat, bos: &str, eos: &str) -> ChatTemplate {
        // The built-in sources are tested to compile.
        match ChatTemplate::from_source(format.source(), bos, eos) {
            Ok(t) => t,
            Err(e) => unreachable!("built-in Mistral template does not compile: {e}"),
        }
    }

    /// The Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders the conversation. A conversation the template refuses (roles
    /// not alternating, unknown role) gives `TemplateRaised` with the
    /// template's own message.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        self.render_with_tools(messages, None, add_generation_prompt)
    }

    /// [`ChatTemplate::render`] with the functions the model may call:
    /// `tools` is OpenAI's list, `[{"type": "function", "function": {"name",
    /// "description", "parameters"}}]`, handed to the template as `tools`.
    pub fn render_with_tools(
        &self,
        messages: &[Message],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let tmpl = self.env.get_template("chat").map_err(render_error)?;
        let tools = match tools {
            Some(t) if !t.as_array().is_some_and(|a| a.is_empty()) => {
                Value::from(minijinja::value::Serde(t))
            }
            _ => Value::from(()),
        };
        tmpl.render(context! {
            messages => Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos,
            eos_token => &self.eos,
            tools => tools,
            documents => Value::from(()),
        })
        .map_err(render_error)
    }
}

#[cfg(test)]
mod tests {
    use super::strftime;

    #[test]
    fn strftime_dates() {
        // 2024-02-29 13:05:09 UTC, a Thursday, day 60 of a leap year.
        assert_eq!(
            strftime(
                1_709_211_909,
                "%Y-%m-%d %H:%M:%S %a %A %b %B %j %y %e %% %Q"
            ),
            "2024-02-29 13:05:09 Thu Thursday Feb February 060 24 29 % %Q"
        );
        assert_eq!(strftime(0, "%d %b %Y"), "01 Jan 1970");
        assert_eq!(strftime(951_782_400, "%Y-%m-%d %j"), "2000-02-29 060");
        assert_eq!(strftime(-86_400, "%Y-%m-%d %A"), "1969-12-31 Wednesday");
    }
}
