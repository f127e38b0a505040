//! Loading a 10,000-route routes.yaml: parse and validate (`config::parse`), then compile the
//! matcher (`Matcher::new`), as every reload does.

mod support;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use strangler::config;
use strangler::matcher::Matcher;

fn parse_and_compile(c: &mut Criterion) {
    let yaml = support::routes_yaml(10_000);
    let mut group = c.benchmark_group("config");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(6));
    group.bench_function("parse_compile/10000", |b| {
        b.iter(|| {
            let checked = match config::parse(std::hint::black_box(&yaml)) {
                Ok(c) => c,
                Err(diags) => panic!("generated config is invalid: {diags:?}"),
            };
            let matcher = Matcher::new(&checked.config.routes);
            (checked, matcher)
        })
    });
    group.bench_function("yaml_tree/10000", |b| {
        b.iter(|| config::yaml::parse(std::hint::black_box(&yaml)))
    });
    group.bench_function("yaml_events_only/10000", |b| {
        struct Noop(usize);
        impl yaml_rust2::parser::MarkedEventReceiver for Noop {
            fn on_event(
                &mut self,
                _ev: yaml_rust2::parser::Event,
                _m: yaml_rust2::scanner::Marker,
            ) {
                self.0 += 1;
            }
        }
        b.iter(|| {
            let mut r = Noop(0);
            let mut p = yaml_rust2::parser::Parser::new_from_str(std::hint::black_box(&yaml));
            p.load(&mut r, false).ok();
            r.0
        })
    });
    group.bench_function("compile_only/10000", |b| {
        let checked = match config::parse(&yaml) {
            Ok(c) => c,
            Err(diags) => panic!("generated config is invalid: {diags:?}"),
        };
        b.iter(|| Matcher::new(std::hint::black_box(&checked.config.routes)))
    });
    group.finish();
}

criterion_group!(benches, parse_and_compile);
criterion_main!(benches);
