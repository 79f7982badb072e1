//! [`Browser`]: headless Chromium driven through chromedriver, with the W3C
//! WebDriver protocol spoken over `ureq`. For the operator console's tests.
//!
//! Chromium and its driver come from Debian's `chromium` and
//! `chromium-driver` packages, which `scripts/test.sh` installs when they
//! are missing. `FOOTPRINT_CHROMIUM` and `FOOTPRINT_CHROMEDRIVER` point
//! elsewhere.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;
use serde_json::{Value, json};

/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One headless Chromium session; the browser and its driver stop when it
/// is dropped.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
    /// Where a screenshot goes if the test fails while the browser is open.
    failure_shot: Option<PathBuf>,
}

/// An element of the page.
#[derive(Debug, Clone)]
pub struct Element(String);

fn find_program(env: &str, names: &[&str], paths: &[&str]) -> Result<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        return Ok(PathBuf::from(p));
    }
    for p in paths {
        if Path::new(p).is_file() {
            return Ok(PathBuf::from(p));
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for n in names {
            let candidate = dir.join(n);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "{} not found: install Debian's chromium and chromium-driver packages \
         (scripts/test.sh does), or set {env}",
        names[0]
    )
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with its own
    /// profile, `width`×`height` pixels.
    pub fn start(width: u32, height: u32) -> Result<Self> {
        let driver_bin = find_program(
            "FOOTPRINT_CHROMEDRIVER",
            &["chromedriver"],
            &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"],
        )?;
        let chromium = find_program(
            "FOOTPRINT_CHROMIUM",
            &["chromium", "chromium-browser"],
            &["/usr/bin/chromium"],
        )?;
        let port = free_port()?;
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", driver_bin.display()))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let profile = tempfile::tempdir()?;
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            agent,
            _profile: profile,
            failure_shot: None,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(v) = browser.call("GET", "/status", None)
                && v["ready"].as_bool() == Some(true)
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("chromedriver on port {port} did not become ready");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chromium.display().to_string(),
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--no-first-run",
                            format!("--user-data-dir={}", browser._profile.path().display()),
                            format!("--window-size={width},{height}"),
                        ],
                    },
                },
            },
        });
        let v = browser.call("POST", "/session", Some(caps))?;
        browser.session = v["sessionId"]
            .as_str()
            .context("no session id from chromedriver")?
            .to_owned();
        Ok(browser)
    }

    /// One WebDriver command; its `value`, or an error with WebDriver's.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let res = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, body) => self
                .agent
                .post(&url)
                .header("content-type", "application/json")
                .send(body.unwrap_or_else(|| json!({})).to_string()),
        };
        let mut res = res.with_context(|| format!("WebDriver {method} {path}"))?;
        let status = res.status().as_u16();
        let text = res.body_mut().read_to_string()?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("WebDriver {method} {path}: {status} {text}"))?;
        if status != 200 {
            bail!(
                "WebDriver {method} {path}: {status} {}: {}",
                v["value"]["error"],
                v["value"]["message"]
            );
        }
        Ok(v["value"].clone())
    }

    fn session(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    /// Keeps a screenshot at `path` if the test panics while this browser
    /// is open: what the page showed when it failed.
    pub fn screenshot_on_failure(&mut self, path: PathBuf) {
        self.failure_shot = Some(path);
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) -> Result<()> {
        self.session("POST", "/url", Some(json!({ "url": url })))?;
        Ok(())
    }

    /// The page's current address.
    pub fn url(&self) -> Result<String> {
        Ok(self
            .session("GET", "/url", None)?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// Every element that matches the CSS selector `css`.
    pub fn find_all(&self, css: &str) -> Result<Vec<Element>> {
        let v = self.session(
            "POST",
            "/elements",
            Some(json!({ "using": "css selector", "value": css })),
        )?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(|s| Element(s.to_owned())))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The first element that matches `css`, if any.
    pub fn find(&self, css: &str) -> Result<Option<Element>> {
        Ok(self.find_all(css)?.into_iter().next())
    }

    /// The first element that matches `css`; an error if there is none.
    pub fn get(&self, css: &str) -> Result<Element> {
        self.find(css)?
            .with_context(|| format!("no element matches `{css}`"))
    }

    /// `el`'s rendered text.
    pub fn text(&self, el: &Element) -> Result<String> {
        Ok(self
            .session("GET", &format!("/element/{}/text", el.0), None)?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// `el`'s attribute `name`, if set.
    pub fn attribute(&self, el: &Element, name: &str) -> Result<Option<String>> {
        Ok(self
            .session("GET", &format!("/element/{}/attribute/{name}", el.0), None)?
            .as_str()
            .map(str::to_owned))
    }

    /// Whether `el` is shown.
    pub fn displayed(&self, el: &Element) -> Result<bool> {
        Ok(self
            .session("GET", &format!("/element/{}/displayed", el.0), None)?
            .as_bool()
            .unwrap_or(false))
    }

    /// The `data-value` of the first element matching `css` (what the
    /// console shows, unformatted); `None` when there is no such element.
    pub fn value(&self, css: &str) -> Result<Option<String>> {
        match self.find(css)? {
            Some(el) => self.attribute(&el, "data-value"),
            None => Ok(None),
        }
    }

    /// Clicks `el`.
    pub fn click(&self, el: &Element) -> Result<()> {
        self.session("POST", &format!("/element/{}/click", el.0), Some(json!({})))?;
        Ok(())
    }

    /// Types `text` into `el`.
    pub fn type_text(&self, el: &Element, text: &str) -> Result<()> {
        self.session(
            "POST",
            &format!("/element/{}/value", el.0),
            Some(json!({ "text": text })),
        )?;
        Ok(())
    }

    /// Runs `script` in the page and returns what it returns.
    pub fn execute(&self, script: &str) -> Result<Value> {
        self.session(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Saves a PNG of the window at `path`.
    pub fn screenshot(&self, path: &Path) -> Result<()> {
        let v = self.session("GET", "/screenshot", None)?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().context("no screenshot data")?)
            .context("screenshot is not base64")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| format!("write {}", path.display()))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(path) = self.failure_shot.take()
            && self.screenshot(&path).is_ok()
        {
            eprintln!("the page when the test failed: {}", path.display());
        }
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
