"""All-in-one antipattern: two models in one server fail and redeploy together; one model per
service behind a proxy does not."""
