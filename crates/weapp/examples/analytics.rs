//! Analytics: yesterday's visit trend, pages and portrait.
//! Run: `cargo run -p weapp --example analytics`.

mod common;

fn yesterday() -> String {
    let days = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64
        + 8 * 3600)
        / 86_400
        - 1;
    // Civil date from days since 1970-01-01.
    let (mut y, mut d) = (1970, days);
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    while d >= if leap(y) { 366 } else { 365 } {
        d -= if leap(y) { 366 } else { 365 };
        y += 1;
    }
    let months = [
        31,
        if leap(y) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut m = 0;
    while d >= months[m] {
        d -= months[m];
        m += 1;
    }
    format!("{y:04}{:02}{:02}", m + 1, d + 1)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let demo = common::Demo::start().await?;
    let day = yesterday();
    let a = demo.client.analytics();
    println!("{:?}", a.daily_visit_trend(&day).await?);
    for p in a.visit_page(&day).await?.list {
        println!("{}: {} visits", p.page_path, p.page_visit_pv);
    }
    for p in a.user_portrait(&day, 7).await?.visit_uv.province {
        println!("{}: {} users over 7 days", p.name, p.value);
    }
    Ok(())
}
