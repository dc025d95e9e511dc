//! `weapp qrcode`: make a mini program code image.

use std::path::PathBuf;

use super::app::{write, AppArgs};
use super::CmdResult;

/// Arguments of `weapp qrcode`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["scene", "path"])))]
pub struct Args {
    #[command(flatten)]
    app: AppArgs,
    /// An unlimited code carrying this scene (1–32 characters).
    #[arg(long)]
    scene: Option<String>,
    /// The page of an unlimited code (no leading /, no query).
    #[arg(long, requires = "scene")]
    page: Option<String>,
    /// Skip WeChat's check that the page is published.
    #[arg(long, requires = "scene")]
    no_check_path: bool,
    /// A limited code (100,000 per app, ever) for this path, which may carry a query.
    #[arg(long)]
    path: Option<String>,
    /// Width in pixels, 280–1280.
    #[arg(long)]
    width: Option<u32>,
    /// Where to write the image.
    #[arg(short = 'o', long)]
    output: PathBuf,
}

/// Makes the code and writes it.
pub async fn run(args: Args) -> CmdResult {
    let client = args.app.client()?;
    let image = match (&args.scene, &args.path) {
        (Some(scene), _) => {
            let mut b = client.wxacode().unlimited(scene.clone());
            if let Some(p) = &args.page {
                b = b.page(p.clone());
            }
            if args.no_check_path {
                b = b.check_path(false);
            }
            if let Some(w) = args.width {
                b = b.width(w);
            }
            b.send().await
        }
        (None, Some(path)) => {
            let mut b = client.wxacode().get(path.clone());
            if let Some(w) = args.width {
                b = b.width(w);
            }
            b.send().await
        }
        (None, None) => unreachable!("clap requires --scene or --path"),
    }
    .map_err(|e| e.to_string())?;
    write(&args.output, &image.bytes)?;
    println!(
        "wrote {} ({} bytes, {})",
        args.output.display(),
        image.bytes.len(),
        image.content_type
    );
    Ok(())
}
