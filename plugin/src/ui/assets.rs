//! The console's page and its assets, compiled into the plugin: the page works with no network
//! besides the API server (no CDN). The player is asciinema-player's own bundle, pinned in
//! `plugin/ui/package-lock.json` and copied into `plugin/ui/vendor/` by `plugin/ui/vendor.sh`
//! (CI runs it again and compares: docs/console.md).

/// The Content-Security-Policy of every answer: only this origin's scripts (the player needs
/// WebAssembly), styles (the player sets inline styles), no framing.
pub const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// An asset: its bytes and content type.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub bytes: &'static [u8],
    pub content_type: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The page itself.
pub const INDEX: Asset = Asset {
    bytes: include_bytes!("../../ui/index.html"),
    content_type: "text/html; charset=utf-8",
};

/// `/assets/NAME`.
pub fn asset(name: &str) -> Option<Asset> {
    let (bytes, content_type): (&'static [u8], _) = match name {
        "app.js" => (include_bytes!("../../ui/app.js"), JS),
        "app.css" => (include_bytes!("../../ui/app.css"), CSS),
        "asciinema-player.min.js" => (
            include_bytes!("../../ui/vendor/asciinema-player.min.js"),
            JS,
        ),
        "asciinema-player.css" => (include_bytes!("../../ui/vendor/asciinema-player.css"), CSS),
        "asciinema-player.LICENSE" => (
            include_bytes!("../../ui/vendor/asciinema-player.LICENSE"),
            "text/plain; charset=utf-8",
        ),
        _ => return None,
    };
    Some(Asset {
        bytes,
        content_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_assets_we_serve() {
        let page = std::str::from_utf8(INDEX.bytes).expect("utf-8");
        let mut refs = 0;
        for part in page.split("/assets/").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
                .collect();
            assert!(asset(&name).is_some(), "the page loads /assets/{name}");
            refs += 1;
        }
        assert!(
            refs >= 4,
            "the page loads its script, styles and the player"
        );
        // No inline script: the CSP would block it.
        assert!(!page.contains("<script>"), "inline script in index.html");
        assert!(!page.contains("http://") && !page.contains("https://"));
    }

    #[test]
    fn the_player_is_bundled() {
        let js = asset("asciinema-player.min.js").expect("player");
        assert!(js.bytes.len() > 100_000);
        assert!(
            std::str::from_utf8(js.bytes)
                .expect("utf-8")
                .contains("AsciinemaPlayer")
        );
        assert!(asset("../Cargo.toml").is_none());
    }
}
