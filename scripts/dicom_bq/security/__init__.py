"""The security review: policy checks on a plan, the review document, the live audit."""
