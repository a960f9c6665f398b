// ESLint flat config: the browser module, its Node tests and the examples. Formatting is prettier's job
// (`npx prettier --check js tests/js examples`); these rules catch mistakes.
import js from '@eslint/js';
import globals from 'globals';

export default [
  {
    // Only the JavaScript this configuration is written for; the dashboard's static script is not linted yet.
    ignores: ['node_modules/**', '.venv/**', 'venv/**', 'backend/**', 'bench/**', 'build/**', 'dist/**'],
  },
  js.configs.recommended,
  {
    languageOptions: { ecmaVersion: 2024, sourceType: 'module' },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      eqeqeq: ['error', 'always'],
      'no-var': 'error',
      'prefer-const': 'error',
      'no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      'max-len': ['error', { code: 110, ignoreUrls: true, ignoreRegExpLiterals: true }],
    },
  },
  {
    files: ['js/**/*.js', 'examples/**/*.js'],
    languageOptions: { globals: { ...globals.browser } },
  },
  {
    files: ['tests/js/**/*.{js,mjs}', 'eslint.config.js'],
    languageOptions: { globals: { ...globals.node } },
  },
];
