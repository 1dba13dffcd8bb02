//! `[cors]` of portcullis.toml → `CorsPolicy`.

use http::HeaderName;

use super::raw::RawCors;
use super::{header_name, ConfigProblem, SourceFile};
use crate::cors::{CorsPolicy, OriginPattern};

/// The CORS policy; `request_id` is exposed unless `expose_headers` says otherwise.
pub fn compile_cors(
    raw: &RawCors,
    file: &SourceFile,
    request_id: &HeaderName,
) -> Result<CorsPolicy, Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    let origins: Vec<OriginPattern> = raw
        .allow_origins
        .get_ref()
        .iter()
        .filter_map(|origin| {
            OriginPattern::parse(origin.get_ref())
                .map_err(|why| {
                    problems.push(
                        file.problem(Some(origin.span()), format!("cors.allow_origins: {why}")),
                    )
                })
                .ok()
        })
        .collect();
    if raw.allow_origins.get_ref().is_empty() {
        problems.push(file.problem(
            Some(raw.allow_origins.span()),
            "cors.allow_origins is empty: list the origins of your browser clients, e.g. \
             [\"https://app.example.com\"]",
        ));
    }
    if *raw.allow_credentials.get_ref() && origins.contains(&OriginPattern::Any) {
        problems.push(file.problem(
            Some(raw.allow_credentials.span()),
            "cors.allow_credentials = true with allow_origins = [\"*\"] would let every site \
             read the responses to its visitors' credentialed requests: list the origins instead",
        ));
    }
    let mut names = |list: &[toml::Spanned<String>]| -> Vec<String> {
        list.iter()
            .filter_map(|name| header_name(file, name, &mut problems))
            .map(|name| name.as_str().to_string())
            .collect()
    };
    let allow_headers = names(&raw.allow_headers);
    let expose_headers = match &raw.expose_headers {
        Some(list) => names(list),
        None => vec![request_id.as_str().to_string()],
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(CorsPolicy {
        origins,
        allow_headers,
        expose_headers: expose_headers.join(", "),
        allow_credentials: *raw.allow_credentials.get_ref(),
        max_age_seconds: raw.max_age_seconds,
    })
}
