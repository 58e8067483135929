use super::*;

#[test]
fn escapes_quotes_and_controls() {
    assert_eq!(serde_json_escape("a\"b\\c\n"), "a\\\"b\\\\c\\u000a");
}

#[test]
fn own_limits_sends_every_header_of_its_own_limiter() {
    let headers = own_limit_headers();
    let mut sent: Vec<(&str, &str)> = headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.to_str().unwrap_or("<not ASCII>")))
        .collect();
    let mut want = OWN_LIMIT_HEADERS.to_vec();
    // A header map groups the lines of one name: compare as sets of lines.
    sent.sort_unstable();
    want.sort_unstable();
    assert_eq!(sent, want);
    assert_eq!(headers.get_all("ratelimit-policy").iter().count(), 2);
}

#[test]
fn own_limits_answers_the_status_asked_for() {
    for (query, want) in [
        (Some("status=503"), 503),
        (Some("x=1&status=429"), 429),
        (Some("status=200"), 200),
        (Some("status=199"), 200),
        (Some("status=600"), 200),
        (Some("status=abc"), 200),
        (None, 200),
    ] {
        assert_eq!(status_asked(query).as_u16(), want, "{query:?}");
    }
}

#[test]
fn slow_waits_as_asked_within_its_bound() {
    assert_eq!(slow_ms(None), 1000);
    assert_eq!(slow_ms(Some("ms=250")), 250);
    assert_eq!(slow_ms(Some("x=1&ms=0")), 0);
    assert_eq!(slow_ms(Some("ms=99999999")), MAX_SLOW_MS);
    assert_eq!(slow_ms(Some("ms=soon")), 1000);
}

#[test]
fn query_numbers_are_read_by_exact_name() {
    assert_eq!(query_number(Some("units=12&ms=3"), "units"), Some(12));
    assert_eq!(query_number(Some("xunits=5&units=7"), "units"), Some(7));
    assert_eq!(query_number(Some("units=-1"), "units"), None);
    assert_eq!(query_number(None, "units"), None);
}

#[tokio::test]
async fn charged_reports_the_units_asked_for() {
    let response = charged("/api/v1/charged?units=1532".parse().unwrap())
        .await
        .into_response();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CHARGE_HEADER], "1532");
}

#[tokio::test]
async fn login_answers_by_password() {
    let uri: Uri = "/api/v1/login".parse().unwrap();
    let mut right = HeaderMap::new();
    right.insert("x-password", HeaderValue::from_static(DEMO_PASSWORD));
    let ok = login(uri.clone(), right).await.into_response();
    assert_eq!(ok.status(), StatusCode::OK);
    let mut wrong = HeaderMap::new();
    wrong.insert("x-password", HeaderValue::from_static("guess"));
    assert_eq!(
        login(uri.clone(), wrong).await.into_response().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(uri, HeaderMap::new()).await.into_response().status(),
        StatusCode::UNAUTHORIZED
    );
}
