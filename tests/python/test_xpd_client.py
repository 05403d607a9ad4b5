"""The Python client (common/client/python/xpd_client) against a live local
cluster on the built-in default model (DeepSeek-V3 tokenizer, dummy weights).

Run by tests/python/run_python_client_test.sh, which starts `xpd up`, generates
the stubs and sets XPD_ROUTER (host:port) and XPD_BIN (the built `xpd`).
"""

import json
import os
import subprocess
import unittest

import grpc

from xpd_client import Chunk, Client, XpdError

ROUTER = os.environ["XPD_ROUTER"]
XPD_BIN = os.environ["XPD_BIN"]
VOCAB = 129280  # the default model's vocabulary (DeepSeek-V3's)
TIMEOUT = 120.0  # seconds: a bound against hangs, never reached when healthy


class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client = Client(ROUTER, timeout=TIMEOUT)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()

    def test_list_models(self):
        models = self.client.list_models()
        self.assertEqual([m.id for m in models], ["default"])
        self.assertEqual(models[0].vocab_size, VOCAB)
        self.assertGreater(models[0].context_length, 0)

    def test_generate_token_ids_matches_the_cli(self):
        result = self.client.generate([5, 17, 42], max_tokens=6, temperature=0, ignore_eos=True)
        self.assertEqual(len(result.token_ids), 6)
        self.assertEqual(result.finish_reason, "length")
        self.assertEqual(result.prompt_tokens, 3)
        self.assertEqual(result.completion_tokens, 6)
        self.assertTrue(result.request_id)
        self.assertIsInstance(result.text, str)
        # The C++ SDK (xpd generate --router) gets the same greedy tokens.
        cli = subprocess.run(
            [XPD_BIN, "generate", "--router", ROUTER, "--tokens", "5,17,42", "--max-tokens", "6",
             "--temperature", "0", "--ignore-eos", "--format", "json"],
            check=True, capture_output=True, text=True, timeout=TIMEOUT)
        self.assertEqual(json.loads(cli.stdout)["tokens"], result.token_ids)

    def test_generate_text_prompt(self):
        result = self.client.generate("Once upon a time", max_tokens=4, temperature=0, ignore_eos=True)
        self.assertEqual(result.completion_tokens, 4)
        self.assertEqual(result.prompt_tokens, len(self.client.tokenize("Once upon a time")) + 1)  # + BOS
        self.assertEqual(result.text, self.client.detokenize(result.token_ids, skip_special_tokens=True))

    def test_stream_matches_the_whole_completion(self):
        whole = self.client.generate("Hello", max_tokens=5, temperature=0, ignore_eos=True)
        chunks = list(self.client.generate_stream("Hello", max_tokens=5, temperature=0, ignore_eos=True))
        self.assertTrue(all(isinstance(c, Chunk) for c in chunks))
        self.assertGreaterEqual(len(chunks), 2)
        self.assertEqual([t for c in chunks for t in c.token_ids], whole.token_ids)
        self.assertEqual("".join(c.text for c in chunks), whole.text)
        self.assertEqual(chunks[-1].finish_reason, "length")
        self.assertEqual(chunks[-1].completion_tokens, 5)
        self.assertTrue(all(c.finish_reason is None for c in chunks[:-1]))

    def test_chat(self):
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
        answer = self.client.chat(messages, max_tokens=4, temperature=0, ignore_eos=True)
        self.assertEqual(answer.completion_tokens, 4)
        # The router renders the chat template once: Tokenize agrees with Generate.
        self.assertEqual(answer.prompt_tokens, len(self.client.tokenize(messages=messages)))
        streamed = list(self.client.chat_stream(messages, max_tokens=4, temperature=0, ignore_eos=True))
        self.assertEqual("".join(c.text for c in streamed), answer.text)
        self.assertEqual(streamed[-1].finish_reason, "length")

    def test_tokenize_and_detokenize(self):
        ids = self.client.tokenize("Hello world")
        self.assertTrue(ids)
        self.assertTrue(all(0 <= i < VOCAB for i in ids))
        self.assertEqual(self.client.detokenize(ids), "Hello world")

    def test_logprobs(self):
        result = self.client.generate([1, 2, 3], max_tokens=3, temperature=0, ignore_eos=True,
                                      logprobs=True, top_logprobs=2)
        self.assertEqual([lp.token_id for lp in result.logprobs], result.token_ids)
        for lp in result.logprobs:
            self.assertLessEqual(lp.logprob, 0.0)
            self.assertEqual(len(lp.top), 2)

    def test_errors_carry_the_grpc_status_code(self):
        with self.assertRaises(XpdError) as caught:
            self.client.generate([5, VOCAB], max_tokens=1)
        self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("tokens.ids[1]", caught.exception.details)
        self.assertTrue(str(caught.exception).startswith("INVALID_ARGUMENT: "))
        # The streaming form raises on iteration.
        with self.assertRaises(XpdError) as caught:
            list(self.client.generate_stream([-1], max_tokens=1))
        self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        with self.assertRaises(XpdError) as caught:
            self.client.generate([1], max_tokens=0)
        self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("max_tokens", caught.exception.details)
        with self.assertRaises(XpdError) as caught:
            self.client.generate([1], max_tokens=1, model="no-such-model")
        self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)
        # Caught on this side: wrong Python types and options.
        with self.assertRaises(TypeError):
            self.client.generate([1, "2"], max_tokens=1)
        with self.assertRaises(TypeError):
            self.client.generate([1], max_tokens=1, temprature=0)

    def test_cancelled_stream(self):
        stream = self.client.generate_stream([3, 1, 4], max_tokens=5000, ignore_eos=True)
        first = next(stream)
        self.assertTrue(first.token_ids)
        stream.cancel()
        with self.assertRaises(XpdError) as caught:
            for _ in stream:
                pass
        self.assertEqual(caught.exception.code, grpc.StatusCode.CANCELLED)

    def test_unreachable_router_is_unavailable(self):
        with Client("127.0.0.1:1", timeout=10) as nowhere:
            with self.assertRaises(XpdError) as caught:
                nowhere.list_models()
        self.assertEqual(caught.exception.code, grpc.StatusCode.UNAVAILABLE)


if __name__ == "__main__":
    unittest.main()
