"""Shadow A/B test (catalogue 2.1): model A answers every client; model B gets a copy of every
request, and both record what they answered, for a report that compares them."""
