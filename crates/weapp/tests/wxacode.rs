//! Mini program codes against weapp-sim: real images that decode back to what was asked.

use weapp::{AppSecret, Client, ErrCode};
use weapp_test_support::sim_with_app;

/// Decodes a PNG QR code; returns (image width, content).
fn decode(png_bytes: &[u8]) -> (u32, String) {
    let decoder = png::Decoder::new(png_bytes);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgba);
    let (w, h) = (info.width as usize, info.height as usize);
    // Transparent pixels count as background.
    let luma = |x: usize, y: usize| {
        let p = &buf[(y * w + x) * 4..(y * w + x) * 4 + 4];
        if p[3] < 128 {
            255
        } else {
            ((p[0] as u32 + p[1] as u32 + p[2] as u32) / 3) as u8
        }
    };
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, luma);
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    let (_, content) = grids[0].decode().unwrap();
    (info.width, content)
}

#[tokio::test]
async fn codes_are_real_images_of_their_content() {
    let (sim, appid, secret) = sim_with_app().await;
    sim.sim()
        .set_pages(
            &appid,
            vec!["pages/index/index".into(), "pages/item/item".into()],
        )
        .unwrap();
    let client = Client::builder(&appid, AppSecret::new(secret))
        .base_url(sim.url())
        .build()
        .unwrap();

    let img = client
        .wxacode()
        .get("pages/item/item?id=42")
        .width(600)
        .send()
        .await
        .unwrap();
    assert_eq!(img.content_type, "image/png");
    let (width, content) = decode(&img.bytes);
    assert_eq!(content, "pages/item/item?id=42");
    assert!((500..=600).contains(&width), "width honoured: {width}");

    let img = client
        .wxacode()
        .unlimited("id=42&from=qr")
        .page("pages/item/item")
        .line_color(0, 128, 0)
        .hyaline(true)
        .send()
        .await
        .unwrap();
    assert_eq!(decode(&img.bytes).1, "pages/item/item?scene=id=42&from=qr");

    let img = client
        .wxacode()
        .qrcode("pages/index/index")
        .send()
        .await
        .unwrap();
    let (width, content) = decode(&img.bytes);
    assert_eq!(content, "pages/index/index");
    assert!((380..=430).contains(&width), "default 430: {width}");
    assert_eq!(
        sim.sim().codes_used(&appid),
        2,
        "getwxacode + createwxaqrcode share the lifetime counter"
    );
}

#[tokio::test]
async fn documented_failures() {
    let (sim, appid, secret) = sim_with_app().await;
    let client = Client::builder(&appid, AppSecret::new(secret))
        .base_url(sim.url())
        .build()
        .unwrap();
    // Server side: an unknown page with check_path, the lifetime quota.
    let err = client
        .wxacode()
        .unlimited("a=1")
        .page("pages/unpublished/x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.errcode(), Some(ErrCode::InvalidPage));
    assert!(err.rid().is_some(), "answered by WeChat");
    client
        .wxacode()
        .unlimited("a=1")
        .page("pages/unpublished/x")
        .check_path(false)
        .send()
        .await
        .unwrap();
    sim.sim().set_codes_used(&appid, 100_000).unwrap();
    let err = client
        .wxacode()
        .get("pages/index/index")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.errcode(), Some(ErrCode::QrcodeCountOutOfLimit));
    assert_eq!(
        client
            .wxacode()
            .qrcode("p")
            .send()
            .await
            .unwrap_err()
            .errcode(),
        Some(ErrCode::QrcodeCountOutOfLimit)
    );

    // Client side: the same errcodes, without a round trip.
    let before = sim.sim().calls("/wxa/getwxacodeunlimit") + sim.sim().calls("/wxa/getwxacode");
    let local = [
        client
            .wxacode()
            .unlimited("has space")
            .send()
            .await
            .unwrap_err(),
        client
            .wxacode()
            .unlimited("x".repeat(33))
            .send()
            .await
            .unwrap_err(),
        client
            .wxacode()
            .unlimited("a=1")
            .page("/pages/index/index")
            .send()
            .await
            .unwrap_err(),
        client
            .wxacode()
            .get("pages/a?scancode_time=1")
            .send()
            .await
            .unwrap_err(),
        client
            .wxacode()
            .get("pages/a")
            .width(2000)
            .send()
            .await
            .unwrap_err(),
    ];
    let codes: Vec<_> = local.iter().map(|e| e.errcode().unwrap().code()).collect();
    assert_eq!(codes, [40129, 40169, 41030, 85096, 40097]);
    assert!(local.iter().all(|e| e.rid().is_none()));
    assert_eq!(
        sim.sim().calls("/wxa/getwxacodeunlimit") + sim.sim().calls("/wxa/getwxacode"),
        before
    );
}
