//! Typed push messages and events, parsed from XML or JSON. Both formats are first turned into
//! the same JSON tree (XML text values stay strings, so typed fields accept a string or a number),
//! then into a [`PushMessage`]. Anything unrecognised is kept, raw, in [`MessageKind::Unknown`].

use quick_xml::events::Event as XmlEvent;
use quick_xml::Reader;
use serde_json::{Map, Value};

use super::error::PushError;

/// How deep a push body may nest (WeChat's go three levels deep).
const MAX_DEPTH: usize = 16;

/// The wire format of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `<xml>…</xml>`
    Xml,
    /// `{…}`
    Json,
}

impl Format {
    /// Guesses the format from the first non-blank byte.
    pub fn detect(body: &[u8]) -> Option<Format> {
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'<') => Some(Format::Xml),
            Some(b'{') => Some(Format::Json),
            _ => None,
        }
    }
}

/// Parses a WeChat XML document (`<xml>…</xml>`) into a JSON object: elements with children
/// become objects, repeated elements arrays, text and CDATA strings.
///
/// # Errors
/// [`PushError::Parse`] for malformed XML, a root other than `<xml>`, or nesting over 16 levels.
pub fn xml_to_value(xml: &str) -> Result<Value, PushError> {
    let mut reader = Reader::from_str(xml);
    let config = reader.config_mut();
    config.trim_text(true);
    config.expand_empty_elements = true;
    // (name, children, text)
    let mut stack: Vec<(String, Map<String, Value>, String)> = Vec::new();
    let mut root: Option<(String, Value)> = None;
    loop {
        // Errors name the position, never the content (which may be a user's message).
        let event = reader.read_event().map_err(|_| {
            PushError::Parse(format!(
                "XML: malformed near byte {}",
                reader.error_position()
            ))
        })?;
        match event {
            XmlEvent::Start(start) => {
                if root.is_some() {
                    return Err(PushError::Parse(
                        "XML: content after the root element".into(),
                    ));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(PushError::Parse("XML: nested too deeply".into()));
                }
                let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
                stack.push((name, Map::new(), String::new()));
            }
            XmlEvent::End(_) => {
                let (name, children, text) = stack
                    .pop()
                    .ok_or_else(|| PushError::Parse("XML: unbalanced end tag".into()))?;
                let value = if children.is_empty() {
                    Value::String(text)
                } else {
                    Value::Object(children)
                };
                match stack.last_mut() {
                    Some((_, parent, _)) => match parent.get_mut(&name) {
                        Some(Value::Array(items)) => items.push(value),
                        Some(existing) => {
                            let first = existing.take();
                            *existing = Value::Array(vec![first, value]);
                        }
                        None => {
                            parent.insert(name, value);
                        }
                    },
                    None => root = Some((name, value)),
                }
            }
            XmlEvent::Text(t) => {
                let text = t
                    .unescape()
                    .map_err(|_| PushError::Parse("XML: a malformed entity in text".into()))?;
                if let Some((_, _, buf)) = stack.last_mut() {
                    buf.push_str(&text);
                }
            }
            XmlEvent::CData(c) => {
                let bytes = c.into_inner();
                let text = std::str::from_utf8(&bytes)
                    .map_err(|_| PushError::Parse("XML: CDATA is not UTF-8".into()))?;
                if let Some((_, _, buf)) = stack.last_mut() {
                    buf.push_str(text);
                }
            }
            XmlEvent::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err(PushError::Parse("XML: unclosed element".into()));
    }
    match root {
        Some((name, value)) if name == "xml" => Ok(match value {
            Value::String(s) if s.is_empty() => Value::Object(Map::new()),
            v => v,
        }),
        Some(_) => Err(PushError::Parse(
            "XML: the root element is not <xml>".into(),
        )),
        None => Err(PushError::Parse("XML: no root element".into())),
    }
}

/// Renders a flat JSON object as WeChat XML (strings in CDATA, numbers bare; arrays repeat
/// the element; objects nest). Used for replies and by tests.
pub fn value_to_xml(value: &Value) -> String {
    fn write(out: &mut String, name: &str, v: &Value) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| write(out, name, i)),
            Value::Object(map) => {
                out.push_str(&format!("<{name}>"));
                for (k, v) in map {
                    write(out, k, v);
                }
                out.push_str(&format!("</{name}>"));
            }
            Value::String(s) => out.push_str(&format!(
                "<{name}><![CDATA[{}]]></{name}>",
                s.replace("]]>", "]]]]><![CDATA[>")
            )),
            Value::Null => out.push_str(&format!("<{name}></{name}>")),
            other => out.push_str(&format!("<{name}>{other}</{name}>")),
        }
    }
    let mut out = String::new();
    write(&mut out, "xml", value);
    out
}

/// Parses a body in `format` into the JSON tree the typed parser reads.
///
/// # Errors
/// [`PushError::Parse`] when the body is not a well-formed object.
pub fn parse_tree(body: &str, format: Format) -> Result<Value, PushError> {
    let v = match format {
        Format::Xml => xml_to_value(body)?,
        Format::Json => {
            serde_json::from_str(body).map_err(|e| PushError::Parse(format!("JSON: {e}")))?
        }
    };
    if v.is_object() {
        Ok(v)
    } else {
        Err(PushError::Parse("the body is not an object".into()))
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn int(v: &Value, key: &str) -> Option<i64> {
    match v.get(key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// One choice in a subscribe popup or settings change.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeDecision {
    /// The template.
    pub template_id: String,
    /// `accept` or `reject` (or another value WeChat may add).
    pub status: String,
    /// Where the popup was shown (`PopupScene`), for popup events.
    pub popup_scene: Option<String>,
}

/// The delivery result of one subscribe message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeSent {
    /// The template.
    pub template_id: String,
    /// The message id.
    pub msg_id: String,
    /// 0 on success.
    pub error_code: i64,
    /// `success` or a reason.
    pub error_status: String,
}

/// The asynchronous verdict of `media_check_async`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MediaCheck {
    /// The app.
    pub appid: String,
    /// The `trace_id` returned by `media_check_async`.
    pub trace_id: String,
    /// API version.
    pub version: i64,
    /// 0 on success.
    pub errcode: i64,
    /// `risky`, `pass` or `review`.
    pub suggest: String,
    /// The label (100 = normal).
    pub label: i64,
    /// Per-strategy details, as sent.
    pub detail: Value,
}

/// What a push is.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum MessageKind {
    /// A text message from the user.
    Text {
        /// Its text.
        content: String,
        /// `MsgId`.
        msg_id: i64,
    },
    /// An image from the user.
    Image {
        /// A URL of the image.
        pic_url: String,
        /// Its media id.
        media_id: String,
        /// `MsgId`.
        msg_id: i64,
    },
    /// A mini program card sent by the user.
    MiniProgramPage {
        /// Card title.
        title: String,
        /// The card's app.
        app_id: String,
        /// Page path.
        page_path: String,
        /// Thumbnail URL.
        thumb_url: String,
        /// Thumbnail media id.
        thumb_media_id: String,
        /// `MsgId`.
        msg_id: i64,
    },
    /// The user entered the customer-service session.
    UserEnterTempSession {
        /// `SessionFrom` set on the contact button.
        session_from: String,
    },
    /// The user answered a subscribe popup.
    SubscribePopup(Vec<SubscribeDecision>),
    /// The user changed subscriptions in settings.
    SubscribeChange(Vec<SubscribeDecision>),
    /// Subscribe messages were delivered (or not).
    SubscribeSent(Vec<SubscribeSent>),
    /// A `media_check_async` verdict.
    MediaCheck(MediaCheck),
    /// Anything else; the fields are in [`PushMessage::raw`].
    Unknown,
}

/// A verified, decrypted push.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PushMessage {
    /// The mini program's original id (`gh_…`).
    pub to_user_name: String,
    /// The user's openid.
    pub from_user_name: String,
    /// Unix seconds.
    pub create_time: i64,
    /// `MsgType`.
    pub msg_type: String,
    /// `Event`, for events.
    pub event: Option<String>,
    /// The typed content.
    pub kind: MessageKind,
    /// Every field as received.
    pub raw: Value,
}

/// `List` may be an array, a single object, or (in XML) wrapped in an event-specific element.
fn list(v: &Value, wrapper: &str) -> Vec<Value> {
    let node = v
        .get(wrapper)
        .and_then(|w| w.get("List"))
        .or_else(|| v.get("List"));
    match node {
        Some(Value::Array(items)) => items.clone(),
        Some(obj @ Value::Object(_)) => vec![obj.clone()],
        _ => Vec::new(),
    }
}

fn decisions(v: &Value, wrapper: &str) -> Vec<SubscribeDecision> {
    list(v, wrapper)
        .iter()
        .map(|i| SubscribeDecision {
            template_id: text(i, "TemplateId").unwrap_or_default(),
            status: text(i, "SubscribeStatusString").unwrap_or_default(),
            popup_scene: text(i, "PopupScene"),
        })
        .collect()
}

impl PushMessage {
    /// Reads a parsed tree (see [`parse_tree`]).
    ///
    /// # Errors
    /// [`PushError::Parse`] when `MsgType` is missing.
    pub fn from_value(v: Value) -> Result<Self, PushError> {
        let msg_type =
            text(&v, "MsgType").ok_or_else(|| PushError::Parse("MsgType is missing".into()))?;
        let event = text(&v, "Event");
        let s = |k: &str| text(&v, k).unwrap_or_default();
        let msg_id = || int(&v, "MsgId").unwrap_or_default();
        let kind = match (msg_type.as_str(), event.as_deref()) {
            ("text", _) => MessageKind::Text {
                content: s("Content"),
                msg_id: msg_id(),
            },
            ("image", _) => MessageKind::Image {
                pic_url: s("PicUrl"),
                media_id: s("MediaId"),
                msg_id: msg_id(),
            },
            ("miniprogrampage", _) => MessageKind::MiniProgramPage {
                title: s("Title"),
                app_id: s("AppId"),
                page_path: s("PagePath"),
                thumb_url: s("ThumbUrl"),
                thumb_media_id: s("ThumbMediaId"),
                msg_id: msg_id(),
            },
            ("event", Some("user_enter_tempsession")) => MessageKind::UserEnterTempSession {
                session_from: s("SessionFrom"),
            },
            ("event", Some("subscribe_msg_popup_event")) => {
                MessageKind::SubscribePopup(decisions(&v, "SubscribeMsgPopupEvent"))
            }
            ("event", Some("subscribe_msg_change_event")) => {
                MessageKind::SubscribeChange(decisions(&v, "SubscribeMsgChangeEvent"))
            }
            ("event", Some("subscribe_msg_sent_event")) => MessageKind::SubscribeSent(
                list(&v, "SubscribeMsgSentEvent")
                    .iter()
                    .map(|i| SubscribeSent {
                        template_id: text(i, "TemplateId").unwrap_or_default(),
                        msg_id: text(i, "MsgID").unwrap_or_default(),
                        error_code: int(i, "ErrorCode").unwrap_or_default(),
                        error_status: text(i, "ErrorStatus").unwrap_or_default(),
                    })
                    .collect(),
            ),
            ("event", Some("wxa_media_check")) => MessageKind::MediaCheck(MediaCheck {
                appid: s("appid"),
                trace_id: s("trace_id"),
                version: int(&v, "version").unwrap_or_default(),
                errcode: int(&v, "errcode").unwrap_or_default(),
                suggest: v
                    .get("result")
                    .and_then(|r| text(r, "suggest"))
                    .unwrap_or_default(),
                label: v
                    .get("result")
                    .and_then(|r| int(r, "label"))
                    .unwrap_or_default(),
                detail: v.get("detail").cloned().unwrap_or(Value::Null),
            }),
            _ => MessageKind::Unknown,
        };
        Ok(PushMessage {
            to_user_name: s("ToUserName"),
            from_user_name: s("FromUserName"),
            create_time: int(&v, "CreateTime").unwrap_or_default(),
            msg_type,
            event,
            kind,
            raw: v,
        })
    }

    /// Parses a decrypted body.
    ///
    /// # Errors
    /// [`PushError::Parse`].
    pub fn parse(body: &str, format: Format) -> Result<Self, PushError> {
        Self::from_value(parse_tree(body, format)?)
    }

    /// The name handlers are registered under: the `Event` for events, else the `MsgType`
    /// (`text`, `image`, `miniprogrampage`, `user_enter_tempsession`, `subscribe_msg_popup_event`, …).
    pub fn type_name(&self) -> &str {
        self.event
            .as_deref()
            .filter(|_| self.msg_type == "event")
            .unwrap_or(&self.msg_type)
    }

    /// What WeChat's retries of this push share: the `MsgId` when there is one; for events,
    /// `FromUserName`, `CreateTime`, the event name and a digest of every field. A retry resends
    /// the identical message, while two different events of one user in the same second (two
    /// media-check verdicts, say) must not be mistaken for one.
    pub fn dedup_key(&self) -> String {
        use sha2::{Digest, Sha256};
        match int(&self.raw, "MsgId").or_else(|| int(&self.raw, "MsgID")) {
            Some(id) => format!("msg:{id}"),
            None => {
                // serde_json objects are key-sorted, so equal trees serialize equally.
                let digest = Sha256::digest(self.raw.to_string().as_bytes());
                format!(
                    "evt:{}:{}:{}:{}",
                    self.from_user_name,
                    self.create_time,
                    self.type_name(),
                    &hex::encode(digest)[..16]
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_message_from_xml_and_json_agree() {
        let xml = "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oUser]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好 <b>&amp;</b>]]></Content><MsgId>4363689963896700987</MsgId></xml>";
        let a = PushMessage::parse(xml, Format::Xml).unwrap();
        let b = PushMessage::parse(
            r#"{"ToUserName":"gh_1","FromUserName":"oUser","CreateTime":1700000000,"MsgType":"text","Content":"你好 <b>&amp;</b>","MsgId":4363689963896700987}"#,
            Format::Json,
        )
        .unwrap();
        assert_eq!(
            a.kind,
            MessageKind::Text {
                content: "你好 <b>&amp;</b>".into(),
                msg_id: 4363689963896700987
            }
        );
        assert_eq!(a.kind, b.kind);
        assert_eq!(
            (a.create_time, a.from_user_name.as_str()),
            (1700000000, "oUser")
        );
        assert_eq!(a.dedup_key(), "msg:4363689963896700987");
        assert_eq!(a.type_name(), "text");
    }

    #[test]
    fn subscribe_popup_list_as_xml_wrapper_json_array_or_single_object() {
        let xml = "<xml><ToUserName>gh</ToUserName><FromUserName>oU</FromUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>subscribe_msg_popup_event</Event><SubscribeMsgPopupEvent><List><TemplateId>T1</TemplateId><SubscribeStatusString>accept</SubscribeStatusString><PopupScene>0</PopupScene></List><List><TemplateId>T2</TemplateId><SubscribeStatusString>reject</SubscribeStatusString><PopupScene>0</PopupScene></List></SubscribeMsgPopupEvent></xml>";
        let m = PushMessage::parse(xml, Format::Xml).unwrap();
        let MessageKind::SubscribePopup(list) = &m.kind else {
            panic!("{m:?}")
        };
        assert_eq!(list.len(), 2);
        assert_eq!(
            (list[1].template_id.as_str(), list[1].status.as_str()),
            ("T2", "reject")
        );
        assert!(
            m.dedup_key()
                .starts_with("evt:oU:1:subscribe_msg_popup_event:"),
            "{}",
            m.dedup_key()
        );
        assert_eq!(
            m.dedup_key(),
            PushMessage::parse(xml, Format::Xml).unwrap().dedup_key(),
            "a retry has the same key"
        );
        let other = PushMessage::parse(&xml.replace("T2", "T3"), Format::Xml).unwrap();
        assert_ne!(
            m.dedup_key(),
            other.dedup_key(),
            "another event in the same second does not"
        );

        let one = json!({"ToUserName": "gh", "FromUserName": "oU", "CreateTime": 1, "MsgType": "event", "Event": "subscribe_msg_change_event",
                         "List": {"TemplateId": "T1", "SubscribeStatusString": "reject"}});
        let m = PushMessage::from_value(one).unwrap();
        assert_eq!(
            m.kind,
            MessageKind::SubscribeChange(vec![SubscribeDecision {
                template_id: "T1".into(),
                status: "reject".into(),
                popup_scene: None
            }])
        );
        let many = json!({"MsgType": "event", "Event": "subscribe_msg_sent_event", "List": [{"TemplateId": "T", "MsgID": "1", "ErrorCode": 0, "ErrorStatus": "success"}]});
        let MessageKind::SubscribeSent(sent) = PushMessage::from_value(many).unwrap().kind else {
            panic!()
        };
        assert_eq!(sent[0].error_status, "success");
    }

    #[test]
    fn events_and_unknowns() {
        let m = PushMessage::from_value(json!({"MsgType": "event", "Event": "wxa_media_check", "appid": "wx1", "trace_id": "t", "version": 2, "errcode": 0,
            "result": {"suggest": "risky", "label": 20002}, "detail": [{"strategy": "content_model"}]})).unwrap();
        let MessageKind::MediaCheck(mc) = m.kind else {
            panic!()
        };
        assert_eq!(
            (mc.suggest.as_str(), mc.label, mc.trace_id.as_str()),
            ("risky", 20002, "t")
        );
        let m = PushMessage::from_value(
            json!({"MsgType": "event", "Event": "user_enter_tempsession", "SessionFrom": "btn"}),
        )
        .unwrap();
        assert_eq!(
            m.kind,
            MessageKind::UserEnterTempSession {
                session_from: "btn".into()
            }
        );
        let m = PushMessage::from_value(json!({"MsgType": "voice", "MediaId": "m"})).unwrap();
        assert_eq!(
            (m.kind, m.raw["MediaId"].as_str()),
            (MessageKind::Unknown, Some("m"))
        );
        assert!(PushMessage::from_value(json!({"Content": "x"})).is_err());
    }

    #[test]
    fn malformed_xml_is_a_parse_error() {
        for bad in [
            "<xml><a>1</xml>",
            "<root><a>1</a></root>",
            "<xml>",
            "not xml",
            "<xml></xml><xml></xml>",
        ] {
            assert!(
                matches!(xml_to_value(bad), Err(PushError::Parse(_))),
                "{bad}"
            );
        }
        let deep = format!("<xml>{}{}</xml>", "<a>".repeat(40), "</a>".repeat(40));
        assert!(xml_to_value(&deep).is_err());
        assert_eq!(xml_to_value("<xml></xml>").unwrap(), json!({}));
    }

    #[test]
    fn xml_rendering_round_trips() {
        let v = json!({"ToUserName": "gh", "CreateTime": 5, "Content": "a ]]> b", "List": [{"TemplateId": "T1"}, {"TemplateId": "T2"}]});
        let back = xml_to_value(&value_to_xml(&v)).unwrap();
        assert_eq!(back["Content"], "a ]]> b");
        assert_eq!(back["CreateTime"], "5");
        assert_eq!(back["List"][1]["TemplateId"], "T2");
    }
}
