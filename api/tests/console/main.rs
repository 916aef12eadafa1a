//! The web console in a real browser: headless Chromium, driven through chromedriver, against a
//! real `cep serve` process. Each test checks that the page reported no errors.
//!
//! With `CONSOLE_SCREENSHOTS=DIR`, the tests write a 1280x800 screenshot of each page to DIR
//! (docs/console/ holds the ones docs/console.md shows) and the measurements at scale to
//! DIR/timings.json.

mod service;
mod webdriver;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use service::Service;
use webdriver::Browser;

/// One browser at a time: each is a few hundred MB and several processes.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn screenshots() -> Option<PathBuf> {
    std::env::var_os("CONSOLE_SCREENSHOTS").map(PathBuf::from)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn login_failures() -> Value {
    json!({
        "name": "login-failures",
        "within": "2s",
        "after_match": "skip_past_last_event",
        "stages": [{"name": "fail", "where": "type == 'fail'", "times": 3, "consecutive": true}]
    })
}

async fn shot(browser: &Browser, name: &str) {
    let (w, h) = browser.screenshot(screenshots().as_deref(), name).await;
    assert_eq!((w, h), (1280, 800), "screenshots are 1280x800");
}

async fn assert_no_errors(browser: &Browser) {
    let errors = browser.errors().await;
    assert!(errors.is_empty(), "the page reported errors: {errors:?}");
    let shown = browser.text("#main").await;
    assert!(
        !shown.contains("undefined") && !shown.contains("NaN"),
        "the page shows a missing value: {shown}"
    );
    // Everything the page loaded came from the service: it works offline.
    let elsewhere = browser
        .execute(
            "return performance.getEntriesByType('resource').map(r => r.name) \
             .filter(n => !n.startsWith(location.origin + '/'))",
            json!([]),
        )
        .await;
    assert_eq!(elsewhere, json!([]), "loaded from elsewhere");
}

#[tokio::test]
async fn patterns_page_validates_as_you_type_draws_the_automaton_and_registers() {
    let _one = ONE_BROWSER.lock().await;
    let service = Service::start(None);
    let browser = Browser::start().await;
    browser.goto(&service.url("/#/patterns")).await;
    // The page's template is valid.
    browser
        .wait_for(
            "the template to validate",
            "return document.getElementById('pattern-status').innerText.startsWith('Valid')",
            json!([]),
        )
        .await;

    // A bad condition, typed key by key: the service's own validation locates the error.
    browser
        .type_into(
            "#pattern-editor",
            r#"{"name": "login-failures", "stages": [{"name": "fail", "where": "type == "}]}"#,
        )
        .await;
    let located = browser
        .wait_for(
            "the located error",
            "const li = document.querySelector('#pattern-errors li[data-path=\"stages[0].where\"]'); \
             return li && !document.getElementById('pattern-errors').hidden && li.innerText",
            json!([]),
        )
        .await;
    let located = located.as_str().unwrap();
    assert!(
        located.contains("stages[0].where") && located.contains("column 9"),
        "{located}"
    );
    assert_eq!(browser.text("#pattern-status").await, "Invalid");
    // A click on the error selects what it is about in the text.
    browser
        .click("#pattern-errors li[data-path=\"stages[0].where\"]")
        .await;
    let selected = browser
        .execute(
            "const t = document.getElementById('pattern-editor'); \
             return t.value.slice(t.selectionStart, t.selectionEnd)",
            json!([]),
        )
        .await;
    assert_eq!(selected, "\"type == \"");
    shot(&browser, "pattern-error.png").await;

    // Malformed JSON is located by line and column.
    browser
        .type_into("#pattern-editor", "{\"name\": \"x\",\n \"stages\": [}")
        .await;
    let malformed = browser
        .wait_for(
            "the malformed-JSON error",
            "const t = document.getElementById('pattern-errors').innerText; \
             return t.includes('line 2') && t",
            json!([]),
        )
        .await;
    assert!(
        malformed.as_str().unwrap().contains("malformed JSON"),
        "{malformed}"
    );

    // The good pattern: valid, and its automaton drawn with the conditions as written.
    browser
        .type_into("#pattern-editor", &login_failures().to_string())
        .await;
    browser
        .wait_for(
            "the pattern to validate",
            "return document.getElementById('pattern-status').innerText === 'Valid: login-failures (new)'",
            json!([]),
        )
        .await;
    let labels = browser
        .execute(
            "return [...document.querySelectorAll('#automaton-svg .edge-label')].map(t => t.textContent)",
            json!([]),
        )
        .await;
    let labels: Vec<&str> = labels
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(labels.contains(&"take: type == 'fail'"), "{labels:?}");
    assert!(
        labels.contains(&"ignore: not (type == 'fail')"),
        "{labels:?}"
    );
    let states = browser
        .execute(
            "return [...document.querySelectorAll('#automaton-svg .state')].map(g => g.getAttribute('class'))",
            json!([]),
        )
        .await;
    assert_eq!(states.as_array().unwrap().len(), 4, "{states}");
    assert!(states.to_string().contains("state start"), "{states}");
    assert!(states.to_string().contains("state final"), "{states}");
    // Which matcher runs it: three consecutive failures never branch.
    let legend = browser
        .execute(
            "return document.querySelector('#automaton .legend').textContent",
            json!([]),
        )
        .await;
    assert!(
        legend.as_str().unwrap().contains("runs on: strict chain"),
        "{legend}"
    );

    // Saving registers it through the API.
    browser.click("#pattern-save").await;
    browser
        .wait_for(
            "the pattern in the list",
            "return document.querySelector('#pattern-list li[data-name=\"login-failures\"]')",
            json!([]),
        )
        .await;
    let (status, stored) = service.get("/api/v1/patterns/login-failures").await;
    assert_eq!(status, 200);
    let mut registered = login_failures();
    registered["version"] = json!(1);
    assert_eq!(stored, registered);
    // The service's version is shown, not put into the definition being edited.
    browser
        .wait_for(
            "the version in the title",
            "return document.getElementById('pattern-title').textContent.includes('(version 1)')",
            json!([]),
        )
        .await;
    let text = browser
        .execute(
            "return document.getElementById('pattern-editor').value",
            json!([]),
        )
        .await;
    assert!(!text.as_str().unwrap().contains("version"), "{text}");

    // Delete shows the pipelines that use the pattern, and the API refuses it.
    let (status, _) = service
        .post(
            "/api/v1/pipelines",
            &json!({"name": "logins", "patterns": ["login-failures"]}),
        )
        .await;
    assert_eq!(status, 201);
    browser
        .goto(&service.url("/#/patterns/login-failures"))
        .await;
    browser.goto(&service.url("/#/pipelines")).await;
    browser
        .goto(&service.url("/#/patterns/login-failures"))
        .await;
    browser
        .wait_for(
            "the pipelines that use the pattern",
            "return document.getElementById('pattern-users').innerText === 'Used by pipelines: logins'",
            json!([]),
        )
        .await;
    browser
        .wait_for(
            "the automaton",
            "return document.querySelector('#automaton-svg')",
            json!([]),
        )
        .await;
    shot(&browser, "patterns.png").await;
    browser.click("#pattern-delete").await;
    browser
        .wait_for(
            "the refusal",
            "const t = document.getElementById('pattern-errors').innerText; \
             return t.includes('used by: logins') && t",
            json!([]),
        )
        .await;
    assert_eq!(service.get("/api/v1/patterns/login-failures").await.0, 200);
    assert_no_errors(&browser).await;
}

#[tokio::test]
async fn playground_runs_sample_events_and_shows_outputs_and_partial_matches() {
    let _one = ONE_BROWSER.lock().await;
    let service = Service::start(None);
    let browser = Browser::start().await;
    browser.goto(&service.url("/#/playground")).await;
    browser
        .set_value(
            "#pg-pattern",
            &serde_json::to_string_pretty(&login_failures()).unwrap(),
        )
        .await;
    let events = [
        r#"{"key": "alice", "ts": 1000, "type": "fail"}"#,
        r#"{"key": "alice", "ts": 1500, "type": "fail"}"#,
        r#"{"key": "bob", "ts": 1600, "type": "fail"}"#,
        r#"{"key": "alice", "ts": 1800, "type": "fail"}"#,
        r#"{"watermark": 5000}"#,
    ]
    .join("\n");
    browser.set_value("#pg-events", &events).await;
    browser.click("#pg-run").await;
    browser
        .wait_for(
            "the outputs",
            "return document.querySelectorAll('#pg-outputs .output-row').length === 2",
            json!([]),
        )
        .await;
    let rows = browser
        .execute(
            "return [...document.querySelectorAll('#pg-outputs .output-row')].map(r => [...r.cells].slice(0, 3).map(c => c.innerText).join(' '))",
            json!([]),
        )
        .await;
    assert_eq!(rows, json!(["match alice 1800", "timeout bob 3600"]));
    let match_events = browser.text("#pg-outputs .output-row td.mono").await;
    assert!(match_events.contains("\"ts\":1000") && match_events.contains("\"ts\":1800"));

    // Step by step: the partial matches alive after each line, with when they time out.
    let steps = browser
        .execute(
            "return [...document.querySelectorAll('#pg-steps .step-row')].map(r => r.cells[4].innerText)",
            json!([]),
        )
        .await;
    let steps: Vec<&str> = steps
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(steps.len(), 5, "{steps:?}");
    // The first event waits for the watermark: nothing is alive yet.
    assert_eq!(steps[0], "none");
    assert_eq!(steps[1], "alice in fail:0, fail ×1, times out at 3000");
    assert!(
        steps[3].contains("alice in fail, fail ×2, times out at 3000")
            && steps[3].contains("bob in fail:0, fail ×1, times out at 3600"),
        "{steps:?}"
    );
    // The watermark step emits the timeout of bob's match; nothing is left.
    assert_eq!(steps[4], "none");
    let outputs_of_last = browser
        .execute(
            "return document.querySelectorAll('#pg-steps .step-row')[4].cells[3].innerText",
            json!([]),
        )
        .await;
    assert!(
        outputs_of_last.as_str().unwrap().contains("timeout bob"),
        "{outputs_of_last}"
    );
    shot(&browser, "playground.png").await;
    // Nothing was stored.
    assert_eq!(
        service.get("/api/v1/patterns").await.1,
        json!({"patterns": []})
    );

    // A bad event is located by its line.
    browser
        .set_value(
            "#pg-events",
            "{\"key\": \"a\", \"ts\": 1}\n\n{\"ts\": 2, \"type\": \"fail\"}",
        )
        .await;
    browser.click("#pg-run").await;
    let error = browser
        .wait_for(
            "the located event error",
            "const b = document.getElementById('pg-error'); return !b.hidden && b.innerText",
            json!([]),
        )
        .await;
    let error = error.as_str().unwrap();
    assert!(
        error.contains("line 3: steps[1].event: missing key field 'key'"),
        "{error}"
    );
    assert_no_errors(&browser).await;
}

#[tokio::test]
async fn pipelines_live_outputs_and_key_inspector() {
    let _one = ONE_BROWSER.lock().await;
    let service = Service::start(None);
    assert_eq!(
        service.post("/api/v1/patterns", &login_failures()).await.0,
        201
    );
    let browser = Browser::start().await;

    // Create a pipeline from the form.
    browser.goto(&service.url("/#/pipelines")).await;
    browser
        .set_value(
            "#pl-editor",
            &json!({"name": "logins", "key_by": "user", "patterns": ["login-failures"]})
                .to_string(),
        )
        .await;
    browser.click("#pl-create").await;
    browser
        .wait_for(
            "the new pipeline",
            "return document.querySelector('.pl-row[data-name=\"logins\"]')",
            json!([]),
        )
        .await;
    let (_, pipeline) = service.get("/api/v1/pipelines/logins").await;
    assert_eq!(pipeline["key_by"], "user");
    // And one from the form fields.
    browser.type_into("#plf-name", "accounts").await;
    browser.type_into("#plf-key-by", "account.id").await;
    browser.type_into("#plf-patterns", "login-failures").await;
    browser.click("#pl-create").await;
    browser
        .wait_for(
            "the pipeline made by the form",
            "return document.querySelector('.pl-row[data-name=\"accounts\"]')",
            json!([]),
        )
        .await;
    let (_, pipeline) = service.get("/api/v1/pipelines/accounts").await;
    assert_eq!(pipeline["key_by"], "account.id");
    assert_eq!(pipeline["patterns"], json!(["login-failures"]));

    // Live outputs: the alert appears as the events are posted.
    browser.goto(&service.url("/#/live/logins")).await;
    browser
        .wait_for(
            "the stream",
            "return document.getElementById('live-state').innerText === 'live'",
            json!([]),
        )
        .await;
    let t = now_ms() - 5_000;
    let fail = |user: &str, at: i64| json!({"user": user, "ts": at, "type": "fail"});
    let events = json!([
        fail("alice", t),
        fail("alice", t + 100),
        fail("alice", t + 200),
        fail("carol", t + 300),
        fail("carol", t + 400),
        {"user": "bob", "ts": t + 500, "type": "ok"},
    ]);
    let (status, report) = service
        .post("/api/v1/pipelines/logins/events", &events)
        .await;
    assert_eq!(status, 202, "{report}");
    let row = browser
        .wait_for(
            "the alert",
            "const r = document.querySelector('#live-list .vrow'); return r && r.innerText",
            json!([]),
        )
        .await;
    let row = row.as_str().unwrap();
    assert!(
        row.contains("match") && row.contains("login-failures") && row.contains("alice"),
        "{row}"
    );
    browser.click("#live-list .vrow").await;
    let detail: Value = serde_json::from_str(&browser.text("#live-detail").await).unwrap();
    assert_eq!(detail["events"]["fail"].as_array().unwrap().len(), 3);
    assert_eq!(detail["events"]["fail"][2]["ts"], t + 200);
    let spark = browser
        .text("#sparklines .spark[data-pattern=\"login-failures\"]")
        .await;
    assert_eq!(
        spark.split_whitespace().collect::<Vec<_>>(),
        ["login-failures", "1"]
    );
    shot(&browser, "live.png").await;
    // Filters apply to what is shown.
    browser.type_into("#live-key", "zed").await;
    browser
        .wait_for(
            "the filter",
            "return document.getElementById('live-count').innerText === '0 shown of 1'",
            json!([]),
        )
        .await;

    // Pipelines: status, and pause/resume through the API.
    browser.goto(&service.url("/#/pipelines")).await;
    let cells = browser
        .wait_for(
            "the pipeline's counters",
            "const r = document.querySelector('.pl-row[data-name=\"logins\"]'); \
             return r && r.cells[2].innerText === '6' && [...r.cells].map(c => c.innerText)",
            json!([]),
        )
        .await;
    // Keys with state: carol (partial matches) and bob (his event waits for the watermark);
    // alice's matched and left nothing.
    assert_eq!(cells[6], "2", "keys: {cells}");
    assert_eq!(cells[7], "2", "partial matches (carol's): {cells}");
    assert!(
        cells[4]
            .as_str()
            .unwrap()
            .starts_with(&(t + 499).to_string()),
        "{cells}"
    );
    browser.click(".pl-pause[data-name=\"logins\"]").await;
    browser
        .wait_for(
            "the resume button",
            "return document.querySelector('.pl-resume[data-name=\"logins\"]')",
            json!([]),
        )
        .await;
    assert_eq!(
        service.get("/api/v1/pipelines/logins").await.1["status"]["paused"],
        true
    );
    shot(&browser, "pipelines.png").await;
    browser.click(".pl-resume[data-name=\"logins\"]").await;
    browser
        .wait_for(
            "the pause button",
            "return document.querySelector('.pl-pause[data-name=\"logins\"]')",
            json!([]),
        )
        .await;
    assert_eq!(
        service.get("/api/v1/pipelines/logins").await.1["status"]["paused"],
        false
    );

    // Key inspector: carol's two partial matches against the watermark.
    browser.goto(&service.url("/#/keys/logins/carol")).await;
    browser
        .wait_for(
            "carol's partial matches",
            "return document.getElementById('key-pm-count') && document.getElementById('key-pm-count').innerText === '2'",
            json!([]),
        )
        .await;
    assert_eq!(browser.text("#key-watermark").await, (t + 499).to_string());
    let rows = browser
        .execute(
            "return [...document.querySelectorAll('#key-table .key-pm')].map(r => [...r.cells].slice(1, 4).map(c => c.innerText).join(' '))",
            json!([]),
        )
        .await;
    assert_eq!(
        rows,
        json!([
            format!("fail {} {}", t + 300, t + 2300),
            format!("fail:0 {} {}", t + 400, t + 2400)
        ])
    );
    let dots = browser
        .execute(
            "return document.querySelectorAll('#timeline-svg circle.ev').length",
            json!([]),
        )
        .await;
    assert_eq!(
        dots, 3,
        "carol's events, once per partial match holding them"
    );
    assert!(browser
        .execute(
            "return !!document.querySelector('#timeline-svg .watermark')",
            json!([])
        )
        .await
        .as_bool()
        .unwrap());
    assert_eq!(browser.text("#key-waiting-count").await, "0");
    let shown = browser.text("#key-result").await;
    assert!(
        !shown.contains("null") && !shown.contains("undefined"),
        "{shown}"
    );
    shot(&browser, "keys.png").await;
    // Bob's event is later than the watermark: it waits.
    browser.goto(&service.url("/#/keys/logins/bob")).await;
    browser
        .wait_for(
            "bob's waiting event",
            "return document.querySelectorAll('#key-waiting .key-waiting').length === 1",
            json!([]),
        )
        .await;
    assert!(browser
        .text("#key-waiting .key-waiting")
        .await
        .starts_with(&(t + 500).to_string()));
    assert_eq!(
        browser
            .execute(
                "return document.querySelectorAll('#timeline-svg circle.ev.waiting').length",
                json!([])
            )
            .await,
        1
    );

    // The playground replays the events of the pipeline's recent outputs with its settings.
    browser.goto(&service.url("/#/playground")).await;
    for (select, value) in [
        ("#pg-from-pipeline", "logins"),
        ("#pg-registered", "login-failures"),
    ] {
        browser
            .wait_for(
                "the options",
                "return document.querySelector(arguments[0] + ' option[value=\"' + arguments[1] + '\"]')",
                json!([select, value]),
            )
            .await;
        browser.set_value(select, value).await;
    }
    browser
        .wait_for(
            "the pipeline's events",
            "return document.getElementById('pg-events').value.split('\\n').length === 3",
            json!([]),
        )
        .await;
    assert_eq!(
        browser
            .execute(
                "return document.getElementById('pg-key-by').value",
                json!([])
            )
            .await,
        "user"
    );
    browser.click("#pg-run").await;
    let rows = browser
        .wait_for(
            "the replayed match",
            "const r = [...document.querySelectorAll('#pg-outputs .output-row')]; \
             return r.length && r.map(x => [...x.cells].slice(0, 3).map(c => c.innerText).join(' '))",
            json!([]),
        )
        .await;
    assert_eq!(rows, json!([format!("match alice {}", t + 200)]));
    assert_no_errors(&browser).await;
}

#[tokio::test]
async fn with_a_token_the_console_asks_once_and_the_api_checks_it() {
    let _one = ONE_BROWSER.lock().await;
    let service = Service::start(Some("s3cret"));
    let client = reqwest::Client::new();
    // The page loads without the token; the API does not answer without it.
    let page = client.get(service.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let api = client
        .get(service.url("/api/v1/patterns"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401);

    let browser = Browser::start().await;
    browser.goto(&service.url("/#/patterns")).await;
    browser
        .wait_for(
            "the token dialog",
            "return !document.getElementById('token-dialog').hidden",
            json!([]),
        )
        .await;
    shot(&browser, "token.png").await;
    browser.type_into("#token-input", "s3cret").await;
    browser.click("#token-save").await;
    browser
        .wait_for(
            "the pattern list",
            "return document.getElementById('pattern-count').innerText === '0 of 0 patterns'",
            json!([]),
        )
        .await;
    // Kept for the tab, and used for every call: other pages do not ask again.
    let kept = browser
        .execute(
            "return sessionStorage.getItem('cep-console-token')",
            json!([]),
        )
        .await;
    assert_eq!(kept, "s3cret");
    browser.goto(&service.url("/#/pipelines")).await;
    browser
        .wait_for(
            "the pipelines",
            "return document.querySelector('#pl-table td.muted')",
            json!([]),
        )
        .await;
    let asked = browser
        .execute(
            "return !document.getElementById('token-dialog').hidden",
            json!([]),
        )
        .await;
    assert_eq!(asked, false);
    assert_no_errors(&browser).await;
}

/// 1,000 patterns and 10,000 outputs: the lists stay paged or virtualised (a bounded number of
/// rows in the page), and the render times are measured (printed, and written to
/// `$CONSOLE_SCREENSHOTS/timings.json`; docs/console.md keeps them). No duration is asserted.
#[tokio::test]
async fn a_thousand_patterns_and_ten_thousand_outputs_stay_usable() {
    let _one = ONE_BROWSER.lock().await;
    let service = Service::start(None);
    for chunk in (0..1000).collect::<Vec<_>>().chunks(50) {
        let posts = chunk.iter().map(|i| {
            let body = json!({"name": format!("p{i:04}"), "within": "1m", "stages": [
                {"name": "a", "where": format!("amount > {i}")},
                {"name": "b", "where": "type == 'b'", "contiguity": "next"}
            ]});
            let service = &service;
            async move { service.post("/api/v1/patterns", &body).await.0 }
        });
        for status in futures::future::join_all(posts).await {
            assert_eq!(status, 201);
        }
    }
    let every = json!({"name": "every", "stages": [{"name": "e", "where": "true"}]});
    assert_eq!(service.post("/api/v1/patterns", &every).await.0, 201);
    let (status, _) = service
        .post(
            "/api/v1/pipelines",
            &json!({"name": "busy", "patterns": ["every"]}),
        )
        .await;
    assert_eq!(status, 201);
    let t = now_ms() - 60_000;
    for batch in 0..5 {
        let events: Vec<Value> = (0..2000)
            .map(|i| {
                let n = batch * 2000 + i;
                json!({"key": format!("k{}", n % 20), "ts": t + n, "type": "x"})
            })
            .collect();
        let (status, report) = service
            .post("/api/v1/pipelines/busy/events", &Value::Array(events))
            .await;
        assert_eq!(status, 202, "{report}");
    }
    service
        .post(
            "/api/v1/pipelines/busy/watermark",
            &json!({"watermark": t + 10_000}),
        )
        .await;

    let browser = Browser::start().await;
    browser.goto(&service.url("/#/patterns")).await;
    browser
        .wait_for(
            "1,001 patterns",
            "return document.getElementById('pattern-count').innerText === '1001 of 1001 patterns'",
            json!([]),
        )
        .await;
    let patterns_ms = browser
        .execute("return window.consoleTimings.patterns", json!([]))
        .await;
    let rows = browser
        .execute(
            "return document.querySelectorAll('#pattern-list li').length",
            json!([]),
        )
        .await;
    assert_eq!(rows, 100, "one page of patterns");
    let filter = browser
        .execute(
            "const el = document.getElementById('pattern-filter'); el.value = 'p05'; \
             const t0 = performance.now(); el.dispatchEvent(new Event('input')); \
             return [performance.now() - t0, document.getElementById('pattern-count').innerText]",
            json!([]),
        )
        .await;
    assert_eq!(filter[1], "100 of 1001 patterns");

    browser.goto(&service.url("/#/live/busy")).await;
    browser
        .wait_for(
            "10,000 outputs",
            "return document.getElementById('live-count').innerText === '10000 shown of 10000'",
            json!([]),
        )
        .await;
    let live_ms = browser
        .execute("return window.consoleTimings.live", json!([]))
        .await;
    let scroll = browser
        .execute(
            "const list = document.getElementById('live-list'); const t0 = performance.now(); \
             list.scrollTop = 5000 * 28; list.dispatchEvent(new Event('scroll')); \
             const rows = document.querySelectorAll('#live-list .vrow'); \
             return [performance.now() - t0, rows.length, rows[0].dataset.seq]",
            json!([]),
        )
        .await;
    let rendered = scroll[1].as_u64().unwrap();
    assert!(
        (10..60).contains(&rendered),
        "only the visible rows are in the page: {scroll}"
    );
    // Newest first: row 5,000 from the top is output 5,000 of 10,000.
    assert_eq!(scroll[2], "5000");
    browser.type_into("#live-key", "k7").await;
    browser
        .wait_for(
            "the key filter",
            "return document.getElementById('live-count').innerText === '500 shown of 10000'",
            json!([]),
        )
        .await;
    let filter_live = browser
        .execute("return window.consoleTimings.liveRender", json!([]))
        .await;
    if let Some(dir) = screenshots() {
        shot(&browser, "live-10000.png").await;
        let timings = json!({
            "patterns_page_load_ms_1001_patterns": patterns_ms,
            "patterns_filter_ms": filter[0],
            "live_page_load_and_render_ms_10000_outputs": live_ms,
            "live_scroll_render_ms": scroll[0],
            "live_filter_render_ms": filter_live,
        });
        println!("console timings: {timings}");
        std::fs::write(
            dir.join("timings.json"),
            serde_json::to_string_pretty(&timings).unwrap(),
        )
        .unwrap();
    } else {
        println!(
            "console timings: patterns page {patterns_ms} ms (1,001 patterns), filter {} ms; \
             live page {live_ms} ms (10,000 outputs), scroll {} ms",
            filter[0], scroll[0]
        );
    }
    assert_no_errors(&browser).await;
}
