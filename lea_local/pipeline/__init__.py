"""The turn pipeline: what runs a request between the routes (`lea_local.api`) and the engines
and stores. `agent` is the agent's turn, whole (spoken or not, streamed or not), the one call of
its routes; `turns` the conversation turn (history → prompt → LLM → stored turn) with its
request and result; `voice` the voice turn (decode → transcribe → the conversation turn);
`completions` and `transcriptions` the stateless work of the OpenAI-compatible API; `errors`
what they raise themselves."""
