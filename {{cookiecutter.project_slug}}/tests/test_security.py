from app.security import issue_token, verify_token

SECRET = "s" * 40


def test_a_token_names_its_subject() -> None:
    assert verify_token(issue_token("alice", SECRET), SECRET) == "alice"
    assert verify_token(issue_token("a.b.c", SECRET), SECRET) == "a.b.c"


def test_forged_or_foreign_tokens_are_refused() -> None:
    token = issue_token("alice", SECRET)
    subject, _, signature = token.rpartition(".")

    assert verify_token(f"mallory.{signature}", SECRET) is None
    assert verify_token(f"{subject}.{'0' * len(signature)}", SECRET) is None
    assert verify_token(token, "another secret " * 3) is None
    for malformed in (None, 42, "", ".", "alice", "alice."):
        assert verify_token(malformed, SECRET) is None
