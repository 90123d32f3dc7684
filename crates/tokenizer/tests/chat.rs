//! Chat templates: Mistral's instruct formats against ids produced by Mistral's
//! own tokenizer library, the SmolLM2 file's ChatML template, and the
//! template's own errors.

mod common;

use common::*;
use mistral_gguf::{keys, GgufFile, Metadata};
use mistral_tokenizer::{ChatTemplate, Message, MistralFormat, TokenizerError, ToolCall};

fn metadata(path: &std::path::Path) -> Metadata {
    GgufFile::open(path).unwrap().metadata().clone()
}

/// The vocab file's metadata without its chat template, so the Mistral
/// fallback (chosen from the vocabulary) is used.
fn without_template(name: &str) -> Metadata {
    let mut md = metadata(&vocab_path(name));
    md.remove(keys::TOKENIZER_CHAT_TEMPLATE);
    md
}

/// A system prompt and three user turns, two answered.
fn conversation() -> Vec<Message> {
    vec![
        Message::system("You are a helpful assistant. Answer briefly."),
        Message::user("What is the capital of France?"),
        Message::assistant("The capital of France is Paris."),
        Message::user("And of Italy?"),
        Message::assistant("Rome."),
        Message::user("Thanks! Which one is bigger? 🙂"),
    ]
}

/// Mistral's v1 format (Mistral 7B v0.1/v0.2, Mixtral 8x7B), as mistral-common's
/// `InstructTokenizerV1` builds it: BOS; each user turn is the SentencePiece
/// encoding (with its dummy prefix) of "[INST] {content} [/INST]", the system
/// prompt being folded into the *first* user turn as "{system}\n\n{user}";
/// each answer is the encoding of "{answer}" followed by EOS (2). "[INST]" is
/// plain text in this vocabulary: ▁[ = 733, INST = 16289, ] = 28793,
/// ▁[/ + INST + ] = 733 28748 16289 28793; "\n" has no piece and falls back to
/// <0x0A> = 13. The ids below are exactly what mistral-common 1.13.1's
/// `MistralTokenizer.from_file("tokenizer.model.v1").encode_chat_completion`
/// returns for `conversation()` (text form
/// `<s>▁[INST]▁You▁are…briefly.<0x0A><0x0A>What…France?▁[/INST]▁The…Paris.</s>▁[INST]▁And…`).
const MISTRAL_V1_IDS: &[u32] = &[
    1, // <s>
    733, 16289, 28793, // ▁[INST]
    995, 460, 264, 10865, 13892, 28723, 26307, 15643,
    28723, // ▁You ▁are ▁a ▁helpful ▁assistant . ▁Answer ▁briefly .
    13, 13, // \n\n
    3195, 349, 272, 5565, 302, 4843, 28804, // What ▁is ▁the ▁capital ▁of ▁France ?
    733, 28748, 16289, 28793, // ▁[/INST]
    415, 5565, 302, 4843, 349, 5465, 28723,
    2, // ▁The ▁capital ▁of ▁France ▁is ▁Paris . </s>
    733, 16289, 28793, 1015, 302, 10828, 28804, 733, 28748, 16289,
    28793, // ▁[INST] ▁And ▁of ▁Italy ? ▁[/INST]
    10827, 28723, 2, // ▁Rome . </s>
    733, 16289, 28793, 8868, 28808, 9595, 624, 349, 9942, 28804, 28705,
    29340, // ▁[INST] ▁Thanks ! ▁Which ▁one ▁is ▁bigger ? ▁ 🙂
    733, 28748, 16289, 28793, // ▁[/INST]
];

/// Mistral's v3 format (Mistral 7B v0.3, Mixtral 8x22B), as mistral-common's
/// `InstructTokenizerV3` builds it: BOS; each user turn is [INST] (control id 3),
/// the encoding of its content, [/INST] (4); the system prompt is folded into
/// the *last* user turn; answers are the encoding of "{answer}" then EOS.
/// Exactly what mistral-common 1.13.1 returns for `conversation()` with
/// `mistral_instruct_tokenizer_240323.model.v3` (text form
/// `<s>[INST]▁What…France?[/INST]▁The…Paris.</s>[INST]▁And…[INST]▁You…<0x0A><0x0A>Thanks!…🙂[/INST]`).
const MISTRAL_V3_IDS: &[u32] = &[
    1, 3, // <s> [INST]
    2592, 1117, 1040, 6333, 1070, 5611, 29572,
    4, // ▁What ▁is ▁the ▁capital ▁of ▁France ? [/INST]
    1183, 6333, 1070, 5611, 1117, 6233, 29491,
    2, // ▁The ▁capital ▁of ▁France ▁is ▁Paris . </s>
    3, 1783, 1070, 11596, 29572, 4, // [INST] ▁And ▁of ▁Italy ? [/INST]
    11595, 29491, 2, // ▁Rome . </s>
    3, 1763, 1228, 1032, 11633, 14660, 29491, 27075, 16411,
    29491, // [INST] ▁You ▁are ▁a ▁helpful ▁assistant . ▁Answer ▁briefly .
    781, 781, // \n\n
    23661, 29576, 10363, 1392, 1117, 10710, 29572, 29473, 30108,
    4, // Thanks ! ▁Which ▁one ▁is ▁bigger ? ▁ 🙂 [/INST]
];

#[test]
fn mistral_v1_fallback_matches_mistral_common() {
    let md = without_template("ggml-vocab-mistral-v1.gguf");
    assert_eq!(MistralFormat::detect(&md).unwrap(), MistralFormat::V1);
    let tmpl = ChatTemplate::from_metadata(&md).unwrap();
    let text = tmpl.render(&conversation(), true).unwrap();
    assert_eq!(
        text,
        "<s>[INST] You are a helpful assistant. Answer briefly.\n\nWhat is the capital of France? [/INST] \
         The capital of France is Paris.</s>[INST] And of Italy? [/INST] Rome.</s>\
         [INST] Thanks! Which one is bigger? 🙂 [/INST]"
    );
    let ids = mistral_v1().encode(&text, false, true).unwrap();
    assert_eq!(ids, MISTRAL_V1_IDS);
}

#[test]
fn mistral_v3_fallback_matches_mistral_common() {
    let md = without_template("ggml-vocab-mistral-v3.gguf");
    assert_eq!(MistralFormat::detect(&md).unwrap(), MistralFormat::V3);
    let tmpl = ChatTemplate::from_metadata(&md).unwrap();
    let text = tmpl.render(&conversation(), true).unwrap();
    assert_eq!(
        text,
        "<s>[INST] What is the capital of France?[/INST] The capital of France is Paris.</s>\
         [INST] And of Italy?[/INST] Rome.</s>\
         [INST] You are a helpful assistant. Answer briefly.\n\nThanks! Which one is bigger? 🙂[/INST]"
    );
    let ids = mistral_v3().encode(&text, false, true).unwrap();
    assert_eq!(ids, MISTRAL_V3_IDS);
}

/// Without special parsing, a user typing "[INST]" gets text, not the control token.
#[test]
fn control_tokens_only_parsed_on_request() {
    let tok = mistral_v3();
    let plain = tok.encode("[INST] hi", false, false).unwrap();
    assert!(!plain.contains(&3), "{plain:?}");
    assert_eq!(tok.decode(&plain).unwrap(), "[INST] hi");
    let special = tok.encode("[INST] hi", false, true).unwrap();
    assert_eq!(special[0], 3);
    assert_eq!(&special[1..], &tok.encode("hi", false, false).unwrap()[..]);
    // decode prints no control tokens; decode_special does.
    assert_eq!(tok.decode(&special).unwrap(), "hi");
    assert_eq!(tok.decode_special(&special).unwrap(), "[INST] hi");
}

#[test]
fn smollm2_file_template_renders_chatml() {
    let md = metadata(&smollm2_path());
    let tmpl = ChatTemplate::from_metadata(&md).unwrap();
    let msgs = vec![
        Message::user("Hi there"),
        Message::assistant("Hello! How can I help?"),
        Message::user("What is 2+2?"),
    ];
    let text = tmpl.render(&msgs, true).unwrap();
    // The template adds its default system prompt when the first message is not a system one.
    let expected = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
                    <|im_start|>user\nHi there<|im_end|>\n\
                    <|im_start|>assistant\nHello! How can I help?<|im_end|>\n\
                    <|im_start|>user\nWhat is 2+2?<|im_end|>\n\
                    <|im_start|>assistant\n";
    assert_eq!(text, expected);
    assert!(!tmpl
        .render(&msgs, false)
        .unwrap()
        .ends_with("<|im_start|>assistant\n"));
    // With special parsing the markers become their ids, and the text between is
    // encoded as it would be alone.
    let tok = smollm2();
    let ids = tok.encode(&text, false, true).unwrap();
    let (start, end) = (
        tok.token_id("<|im_start|>").unwrap(),
        tok.token_id("<|im_end|>").unwrap(),
    );
    assert_eq!(ids.iter().filter(|&&i| i == start).count(), 5);
    assert_eq!(ids.iter().filter(|&&i| i == end).count(), 4);
    let user = tok.encode("user\nHi there", false, false).unwrap();
    assert!(ids.windows(user.len()).any(|w| w == user));
    assert!(tok.is_eog(end));
    assert_eq!(tok.decode_special(&ids).unwrap(), text);
}

#[test]
fn template_errors_are_the_templates_own() {
    // The v1 file's own template (Hugging Face's) refuses two user turns in a row.
    let tmpl =
        ChatTemplate::from_metadata(&metadata(&vocab_path("ggml-vocab-mistral-v1.gguf"))).unwrap();
    let err = tmpl
        .render(&[Message::user("a"), Message::user("b")], true)
        .unwrap_err();
    match err {
        TokenizerError::TemplateRaised(msg) => {
            assert_eq!(
                msg,
                "Conversation roles must alternate user/assistant/user/assistant/..."
            )
        }
        other => panic!("unexpected error {other}"),
    }
    let err = tmpl
        .render(&[Message::user("u"), Message::system("s")], true)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Only user and assistant roles are supported!"),
        "{err}"
    );
    // The fallback has the same rule.
    let tmpl = ChatTemplate::mistral(MistralFormat::V1, "<s>", "</s>");
    let err = tmpl
        .render(&[Message::system("s"), Message::assistant("a")], true)
        .unwrap_err();
    assert!(
        matches!(&err, TokenizerError::TemplateRaised(m) if m.contains("must alternate")),
        "{err}"
    );
    let err = tmpl.render(&[Message::new("tool", "x")], true).unwrap_err();
    assert!(
        matches!(&err, TokenizerError::TemplateRaised(m) if m.contains("roles")),
        "{err}"
    );
}

#[test]
fn from_source_python_methods_and_errors() {
    let src = "{{ bos_token }}{% for m in messages %}{{ m.content.strip().upper() }}\
               {% if m.content.startswith(' ') %}!{% endif %}{{ m.role.split('s')|length }}{% endfor %}{{ eos_token }}";
    let tmpl = ChatTemplate::from_source(src, "<B>", "<E>").unwrap();
    assert_eq!(
        tmpl.render(&[Message::user(" hi ")], false).unwrap(),
        "<B>HI!2<E>"
    );
    // strftime_now, used by some Hugging Face templates for today's date.
    let year = ChatTemplate::from_source("{{ strftime_now('%Y') }}", "", "")
        .unwrap()
        .render(&[], false)
        .unwrap();
    assert!(year.len() == 4 && year.as_str() >= "2024", "{year}");
    let err = ChatTemplate::from_source("{% for m in messages %}", "", "").unwrap_err();
    assert!(matches!(err, TokenizerError::TemplateSyntax(_)), "{err}");
    // A runaway template stops instead of hanging.
    let tmpl = ChatTemplate::from_source(
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}",
        "",
        "",
    )
    .unwrap();
    let err = tmpl.render(&[], false).unwrap_err();
    assert!(matches!(err, TokenizerError::TemplateRender(_)), "{err}");
}

#[test]
fn tekken_and_v3_sources_compile() {
    for f in [MistralFormat::V1, MistralFormat::V3, MistralFormat::Tekken] {
        let t = ChatTemplate::mistral(f, "<s>", "</s>");
        let out = t.render(&conversation(), true).unwrap();
        assert!(out.starts_with("<s>[INST]"), "{f:?}: {out}");
    }
    let t = ChatTemplate::mistral(MistralFormat::Tekken, "<s>", "</s>");
    assert_eq!(
        t.render(
            &[
                Message::user("a"),
                Message::assistant("b"),
                Message::user("c")
            ],
            true
        )
        .unwrap(),
        "<s>[INST]a[/INST]b</s>[INST]c[/INST]"
    );
}

/// Constructs real Hugging Face templates rely on (Mistral Small 3.x, Llama 3,
/// Qwen): `is string`, `selectattr`, `dict.get`, `namespace`, list
/// concatenation, `tools is defined`/`none`, `tojson`, negative slices,
/// `loop.last`. A `set` inside a loop stays inside it, as in Jinja2.
#[test]
fn hugging_face_template_constructs() {
    let src = r#"
{%- if not tools is defined %}{%- set tools = none %}{%- endif %}
{%- set users = messages | selectattr("role", "equalto", "user") | list %}
{%- set scoped = [] %}
{%- set ns = namespace(kept=[]) %}
{%- for m in messages %}
    {%- if m["role"] not in ["tool"] and not m.get("tool_calls") %}
        {%- set scoped = scoped + [m] %}
        {%- set ns.kept = ns.kept + [m] %}
    {%- endif %}
{%- endfor %}
{{- bos_token }}{{ users | length }}/{{ scoped | length }}/{{ ns.kept | length }}
{%- for m in ns.kept %}
    {%- if m.content is string %}[{{ m.role[:1] | upper }}:{{ m.content[-3:] }}]{% endif %}
    {%- if loop.last and tools is none %}{{ {"n": loop.length} | tojson }}{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}>{% endif %}"#;
    let tmpl = ChatTemplate::from_source(src, "<s>", "</s>").unwrap();
    let msgs = vec![
        Message::system("be nice"),
        Message::user("hello"),
        Message::assistant("world"),
    ];
    assert_eq!(
        tmpl.render(&msgs, true).unwrap(),
        r#"<s>1/0/3[S:ice][U:llo][A:rld]{"n": 3}>"#
    );
}

/// The weather tool of the function-calling tests, OpenAI's shape.
fn weather_tools(description: &str, parameters: serde_json::Value) -> serde_json::Value {
    serde_json::json!([{"type": "function", "function": {
        "name": "get_weather", "description": description, "parameters": parameters}}])
}

/// Function calling in Mistral's v3 format: the ids mistral-common 1.13.1's
/// `encode_chat_completion` returns for the same request (tools, a system
/// prompt, a call, its result, an answer and a new question; text form
/// `<s>[INST]▁What▁is▁the▁weather▁in▁Paris?[/INST][TOOL_CALLS]▁[{"name":▁"get_weather",▁"arguments":▁{"city":▁"Paris"},▁"id":▁"call00001"}]</s>[TOOL_RESULTS]▁{"content":▁{"temperature":▁18},▁"call_id":▁"call00001"}[/TOOL_RESULTS]▁It▁is▁18▁degrees▁in▁Paris.</s>[AVAILABLE_TOOLS]▁[{"type":▁"function",▁...}][/AVAILABLE_TOOLS][INST]▁You▁are▁a▁helpful▁assistant.<0x0A><0x0A>And▁in▁Rome?[/INST]`),
/// and a second with non-ASCII text and a result that is not JSON.
#[test]
fn mistral_v3_tool_calls_match_mistral_common() {
    let md = without_template("ggml-vocab-mistral-v3.gguf");
    let tmpl = ChatTemplate::from_metadata(&md).unwrap();
    let tok = mistral_v3();
    let tools = weather_tools(
        "Get the weather in a city.",
        serde_json::json!({"type": "object", "properties": {"city": {"type": "string"},
            "unit": {"type": "string", "enum": ["c", "f"]}}, "required": ["city"]}),
    );
    let call = |id: &str, args: &str| ToolCall {
        id: id.into(),
        name: "get_weather".into(),
        arguments: args.into(),
    };
    let messages = vec![
        Message::system("You are a helpful assistant."),
        Message::user("What is the weather in Paris?"),
        Message::tool_calls(vec![call("call00001", "{\"city\": \"Paris\"}")]),
        Message::tool_result("call00001", "{\"temperature\": 18}"),
        Message::assistant("It is 18 degrees in Paris."),
        Message::user("And in Rome?"),
    ];
    let text = tmpl
        .render_with_tools(&messages, Some(&tools), true)
        .unwrap();
    let ids = tok.encode(&text, false, true).unwrap();
    #[rustfmt::skip]
    let want: &[u32] = &[1, 3, 2592, 1117, 1040, 8854, 1065, 6233, 29572, 4, 5, 1501, 7567, 1629, 2032, 1113, 1295, 29498, 1537, 1991, 1316, 1113, 17452, 2032, 10598, 19141, 2032, 1113, 4684, 1046, 8474, 1113, 1081, 2032, 1113, 3613, 29502, 29502, 29502, 29502, 29508, 29507, 10925, 2, 8, 10598, 4557, 2032, 10598, 29475, 17329, 2032, 29473, 29508, 29551, 1649, 1113, 3613, 29498, 1081, 2032, 1113, 3613, 29502, 29502, 29502, 29502, 29508, 18163, 9, 1429, 1117, 29473, 29508, 29551, 11950, 1065, 6233, 29491, 2, 6, 1501, 7567, 1891, 2032, 1113, 3396, 1316, 1113, 3396, 2032, 10598, 1629, 2032, 1113, 1295, 29498, 1537, 1991, 1316, 1113, 7286, 2032, 1113, 2226, 1040, 8854, 1065, 1032, 3758, 9959, 1113, 12206, 2032, 10598, 1891, 2032, 1113, 3582, 1316, 1113, 11491, 2032, 10598, 19141, 2032, 10598, 1891, 2032, 1113, 2195, 8474, 1113, 6074, 2032, 10598, 1891, 2032, 1113, 2195, 1316, 1113, 10825, 2032, 8135, 29485, 1316, 1113, 29490, 3010, 11549, 1113, 11661, 2032, 8135, 19141, 3010, 1743, 10925, 7, 3, 1763, 1228, 1032, 11633, 14660, 29491, 781, 781, 3235, 1065, 11595, 29572, 4];
    assert_eq!(ids, want, "{text}");

    let tools = weather_tools(
        "Météo d'une ville.",
        serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}},
            "required": ["city"]}),
    );
    let messages = vec![
        Message::user("Weather in Zürich?"),
        Message::tool_calls(vec![call("abc123def", "{\"city\": \"Zürich\"}")]),
        Message::tool_result("abc123def", "sunny, 20°"),
    ];
    let text = tmpl
        .render_with_tools(&messages, Some(&tools), true)
        .unwrap();
    let ids = tok.encode(&text, false, true).unwrap();
    #[rustfmt::skip]
    let want: &[u32] = &[1, 6, 1501, 7567, 1891, 2032, 1113, 3396, 1316, 1113, 3396, 2032, 10598, 1629, 2032, 1113, 1295, 29498, 1537, 1991, 1316, 1113, 7286, 2032, 1113, 29523, 13097, 29477, 1049, 29510, 2570, 14294, 9959, 1113, 12206, 2032, 10598, 1891, 2032, 1113, 3582, 1316, 1113, 11491, 2032, 10598, 19141, 2032, 10598, 1891, 2032, 1113, 2195, 29507, 11549, 1113, 11661, 2032, 8135, 19141, 3010, 1743, 10925, 7, 3, 1584, 1991, 1065, 1822, 3123, 1307, 29572, 4, 5, 1501, 7567, 1629, 2032, 1113, 1295, 29498, 1537, 1991, 1316, 1113, 17452, 2032, 10598, 19141, 2032, 1113, 29596, 3123, 1307, 8474, 1113, 1081, 2032, 1113, 17380, 29508, 29518, 29538, 2038, 29507, 10925, 2, 8, 10598, 4557, 2032, 1113, 20643, 2548, 29493, 29473, 29518, 29502, 29670, 1316, 1113, 3613, 29498, 1081, 2032, 1113, 17380, 29508, 29518, 29538, 2038, 18163, 9];
    assert_eq!(ids, want, "{text}");
}
