//! `weapp api METHOD PATH`: call any WeChat API with the access token handled, like `gh api`.

use std::path::PathBuf;

use weapp::http::{Body, Method, RawOutput};

use super::app::{write, AppArgs};
use super::CmdResult;

/// Arguments of `weapp api`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    app: AppArgs,
    /// GET or POST.
    method: String,
    /// The API path, e.g. `/wxa/getwxacodeunlimit` (a query string is allowed).
    path: String,
    /// A JSON body.
    #[arg(long, conflicts_with = "form")]
    json: Option<String>,
    /// Upload a file as a multipart field: `media=@photo.png`.
    #[arg(long, value_name = "FIELD=@FILE")]
    form: Option<String>,
    /// Write the answer to this file (required for binary answers such as images).
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
}

fn content_type_of(path: &str) -> &'static str {
    match path
        .rsplit('.')
        .next()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("mp3") => "audio/mpeg",
        _ => "application/octet-stream",
    }
}

/// Runs the call and prints (or writes) the answer.
pub async fn run(args: Args) -> CmdResult {
    let method = match args.method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        other => return Err(format!("METHOD must be GET or POST, not {other}")),
    };
    let body = match (&args.json, &args.form) {
        (Some(json), _) => {
            let value: serde_json::Value =
                serde_json::from_str(json).map_err(|e| format!("--json is not valid JSON: {e}"))?;
            Body::json(&value).map_err(|e| e.to_string())?
        }
        (None, Some(form)) => {
            let (field, file) = form
                .split_once("=@")
                .ok_or("--form must look like field=@file")?;
            let bytes = std::fs::read(file).map_err(|e| format!("cannot read {file}: {e}"))?;
            let field: &'static str = match field {
                "media" => "media",
                other => {
                    return Err(format!(
                        "only the `media` field is uploaded by WeChat APIs, not `{other}`"
                    ))
                }
            };
            Body::File {
                field,
                filename: file.rsplit('/').next().unwrap_or(file).to_owned(),
                content_type: content_type_of(file).into(),
                bytes: bytes.into(),
            }
        }
        (None, None) => Body::Empty,
    };
    let client = args.app.client()?;
    match client
        .call_raw(method, &args.path, body)
        .await
        .map_err(|e| e.to_string())?
    {
        RawOutput::Json(v) => {
            let text = serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?;
            match &args.output {
                Some(path) => write(path, text.as_bytes()),
                None => {
                    println!("{text}");
                    Ok(())
                }
            }
        }
        RawOutput::Bytes(b) => match &args.output {
            Some(path) => {
                write(path, &b.bytes)?;
                eprintln!(
                    "wrote {} bytes ({}) to {}",
                    b.bytes.len(),
                    b.content_type,
                    path.display()
                );
                Ok(())
            }
            None => Err(format!(
                "the answer is binary ({}, {} bytes): write it with -o FILE",
                b.content_type,
                b.bytes.len()
            )),
        },
    }
}
