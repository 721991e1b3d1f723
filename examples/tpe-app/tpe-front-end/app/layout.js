export const metadata = {
  title: 'The Power100 Experience',
  description: 'TPE sample front end bundled with TPE Ops',
};

export default function RootLayout({ children }) {
  return (
    <html lang="en">
      <body style={{ fontFamily: 'system-ui, sans-serif', margin: '3rem' }}>{children}</body>
    </html>
  );
}
