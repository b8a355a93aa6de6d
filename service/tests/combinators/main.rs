//! Combinators, the builder, boxing and auto traits.

#[path = "../support/mod.rs"]
mod support;

use std::convert::Infallible;

use futures::executor::block_on;
use sheave_service::{
    BoxLayer, BoxLocalService, BoxNewService, BoxService, Error, ErrorKind, NewService, Service,
    ServiceBuilder, ServiceExt, mock, service_fn, shared,
};
use support::{assert_send, assert_sync};

/// The five steps of the stack below, as plain functions.
fn parse(s: &str) -> u64 {
    s.len() as u64
}
fn admit(n: u64) -> Result<u64, Error> {
    if n == 0 {
        Err(Error::msg(ErrorKind::Service, "empty"))
    } else {
        Ok(n)
    }
}
fn triple(n: u64) -> Result<u64, Error> {
    if n == 4 {
        Err(Error::overloaded())
    } else {
        Ok(n * 3)
    }
}
fn plus_one(n: u64) -> Result<u64, Error> {
    Ok(n + 1)
}
fn render(r: Result<u64, Error>) -> Result<String, Error> {
    match r {
        Ok(n) => Ok(format!("<{n}>")),
        Err(e) if e.is_overloaded() => Ok("busy".to_string()),
        Err(e) => Err(e),
    }
}
fn label(s: String) -> String {
    format!("{s}!")
}

/// The same five steps composed by hand.
fn by_hand(s: &str) -> Result<String, Error> {
    let n = admit(parse(s))?;
    render(triple(n).and_then(plus_one)).map(label)
}

/// The five steps as a stack of combinators (innermost first).
fn stack() -> impl Service<&'static str, Response = String, Error = Error, Permit = ()> + Send + Sync
{
    service_fn(|n: u64| async move { triple(n) })
        .and_then(|n| async move { plus_one(n) })
        .then(|r| async move { render(r) })
        .map_response(label)
        .filter(|n: u64| std::future::ready(admit(n)))
        .map_request(parse)
}

const INPUTS: [&str; 5] = ["", "a", "abcd", "hello", "sheave"];

#[test]
fn a_stack_of_five_combinators_behaves_as_their_composition() {
    let svc = stack();
    for input in INPUTS {
        let got = block_on(svc.oneshot(input)).map_err(|e| e.to_string());
        let want = by_hand(input).map_err(|e| e.to_string());
        assert_eq!(got, want, "input {input:?}");
    }
}

#[test]
fn boxed_and_unboxed_stacks_agree() {
    let plain = stack();
    let boxed: BoxService<&str, String, Error> = stack().boxed();
    let local: BoxLocalService<&str, String, Error> = stack().boxed_local();
    assert_send(&boxed);
    assert_sync(&boxed);
    for input in INPUTS {
        let want = block_on(plain.oneshot(input)).map_err(|e| e.to_string());
        assert_eq!(
            block_on(boxed.oneshot(input)).map_err(|e| e.to_string()),
            want
        );
        assert_eq!(
            block_on(local.oneshot(input)).map_err(|e| e.to_string()),
            want
        );
    }
}

#[test]
fn a_concrete_stack_has_send_ready_and_call_futures() {
    let svc = ServiceBuilder::new()
        .map_request(|s: String| s.len())
        .map_response(|n: usize| n * 2)
        .service_fn(|n: usize| async move { Ok::<_, Infallible>(n + 1) });
    assert_send(&svc);
    let ready = svc.ready();
    assert_send(&ready);
    block_on(ready).unwrap();
    let call = svc.call((), "abc".to_string());
    assert_send(&call);
    assert_eq!(block_on(call), Ok(8));
    assert_send(&svc.oneshot(String::new()));

    // A mock-backed stack too: what middleware tests run on can cross threads.
    let (mock, _handle) = mock::pair::<u8, u8>();
    let svc = mock.map_response(|n| n + 1).map_err(|e: Error| e);
    assert_send(&svc.ready());
    assert_send(&svc.oneshot(1));
}

#[test]
fn the_builder_applies_the_first_layer_outermost() {
    let svc = ServiceBuilder::new()
        .map_request(|s: String| s + "a")
        .map_request(|s: String| s + "b")
        .map_response(|s: String| s + "y")
        .map_response(|s: String| s + "x")
        .service_fn(|s: String| async move { Ok::<_, Infallible>(s + "|") });
    // Requests pass a then b; responses pass x then y.
    assert_eq!(
        block_on(svc.oneshot(String::new())),
        Ok("ab|xy".to_string())
    );
}

#[test]
fn an_absent_optional_layer_leaves_the_service_unchanged() {
    for (double, want) in [(true, 8), (false, 4)] {
        let svc = ServiceBuilder::new()
            .option_layer(double.then_some(sheave_service::MapResponseLayer::new(|n: u32| n * 2)))
            .service_fn(|n: u32| async move { Ok::<_, Infallible>(n) });
        assert_eq!(block_on(svc.oneshot(4)), Ok(want));
    }
}

#[test]
fn a_rejected_request_releases_its_permit() {
    let (svc, handle) = mock::pair_with_permits::<u8, u8>(1);
    let svc = svc.filter(|n: u8| async move {
        if n > 10 {
            Err(Error::protocol("too big"))
        } else {
            Ok(n)
        }
    });
    let permit = block_on(svc.ready()).unwrap();
    assert_eq!(handle.permits(), 0);
    assert!(block_on(svc.call(permit, 11)).unwrap_err().is_protocol());
    assert_eq!(handle.permits(), 1);
    assert_eq!(
        handle.queued_requests(),
        0,
        "the inner service never saw it"
    );
}

#[test]
fn map_err_lifts_user_errors_into_service_errors() {
    #[derive(Debug)]
    struct NotFound;
    impl std::fmt::Display for NotFound {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("not found")
        }
    }
    impl std::error::Error for NotFound {}

    let svc = service_fn(|_: ()| async { Err::<(), _>(NotFound) }).map_err(Error::service);
    let err = block_on(svc.oneshot(())).unwrap_err();
    assert!(err.is_service());
    assert_eq!(
        std::error::Error::source(&err).unwrap().to_string(),
        "not found"
    );
}

#[test]
fn and_then_converts_inner_errors_into_its_own() {
    let svc = service_fn(|n: u8| async move {
        if n == 0 {
            Err(std::io::Error::other("zero"))
        } else {
            Ok(n)
        }
    })
    .and_then(|n| async move { Ok::<_, Error>(n * 2) });
    assert_eq!(block_on(svc.oneshot(2)).unwrap(), 4);
    assert!(block_on(svc.oneshot(0)).unwrap_err().is_io());
}

#[test]
fn shared_makes_clones_of_one_service() {
    let factory = shared(service_fn(|n: u8| async move { Ok::<_, Infallible>(n) }));
    let a = block_on(factory.new_service("one")).unwrap();
    let b = block_on(factory.new_service("two")).unwrap();
    assert_eq!(block_on(a.oneshot(1)), block_on(b.oneshot(1)));
}

#[test]
fn combinators_print_closure_type_names() {
    let svc = service_fn(|n: u8| async move { Ok::<_, Infallible>(n) }).map_response(|n| n);
    let printed = format!("{svc:?}");
    assert!(
        printed.starts_with("MapResponse { inner: ServiceFn { f: "),
        "{printed}"
    );
    assert!(printed.contains("{{closure}}"), "{printed}");
}

#[test]
#[should_panic(expected = "reserved on the other side")]
fn an_either_called_with_a_foreign_permit_panics() {
    use sheave_service::Either;
    fn left<S>(s: S) -> Either<S, S> {
        Either::Left(s)
    }
    let svc = left(service_fn(|n: u8| {
        std::future::ready(Ok::<_, Infallible>(n))
    }));
    drop(svc.call(Either::Right(()), 1));
}

#[test]
fn a_box_layer_erases_the_stack_below_a_boundary() {
    let erase = BoxLayer::new(
        ServiceBuilder::new()
            .map_request(|s: &'static str| s.len() as u64)
            .filter(|n: u64| std::future::ready(admit(n))),
    );
    let svc = ServiceBuilder::new()
        .map_response(label)
        .layer(erase.clone())
        .service_fn(|n: u64| async move { Ok::<_, Error>(format!("<{}>", n * 3 + 1)) });
    assert_send(&erase);
    assert_sync(&erase);
    assert_eq!(block_on(svc.oneshot("ab")).unwrap(), "<7>!");
    assert!(block_on(svc.oneshot("")).unwrap_err().is_service());
}

#[test]
fn a_box_new_service_is_shareable_across_threads() {
    let factory: BoxNewService<u8, u8, u8, Error> = BoxNewService::new(|k: u8| async move {
        Ok::<_, Error>(service_fn(
            move |n: u8| async move { Ok::<_, Error>(n * k) },
        ))
    });
    assert_send(&factory);
    assert_sync(&factory);
    std::thread::scope(|scope| {
        for k in 1..=2 {
            let factory = &factory;
            scope.spawn(move || {
                let svc = block_on(factory.new_service(k)).unwrap();
                assert_eq!(block_on(svc.oneshot(5)).unwrap(), 5 * k);
            });
        }
    });
}

#[test]
fn builder_shortcuts_match_the_ext_methods() {
    let built = ServiceBuilder::new()
        .map_request(parse)
        .filter(|n: u64| std::future::ready(admit(n)))
        .map_response(label)
        .then(|r| async move { render(r) })
        .and_then(|n| async move { plus_one(n) })
        .service_fn(|n: u64| async move { triple(n) });
    for input in INPUTS {
        let got = block_on(built.oneshot(input)).map_err(|e| e.to_string());
        assert_eq!(
            got,
            by_hand(input).map_err(|e| e.to_string()),
            "input {input:?}"
        );
    }
}
