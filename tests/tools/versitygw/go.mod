// Builds versitygw, the S3-compatible server of the tests (Apache-2.0; sigv4 credentials checked).
module mltask-operator/tests/tools/versitygw

go 1.25.0

require github.com/versity/versitygw v1.8.0 // indirect
